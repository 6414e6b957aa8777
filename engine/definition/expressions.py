"""The guard language: CEL expressions checked and compiled when a definition loads, evaluated per event.

A guard (`when:`) is a CEL expression over four maps: `data` (the case's data), `payload` (the event's
fields), `actor` (id, roles, department) and `case` (what its audit trail says of it: `CASE_FIELDS`). A
computed `set` (`compute:`) is the same language, its value taken as it is (`Guard.value`).
`compile_guard` checks a guard before anything runs it:

1. limits (`guard-too-complex`): the length, the bracket nesting, and the constructs whose cost could grow
   faster than the size of the data (see "Evaluation cost" below);
2. syntax (`bad-guard`): CEL's own parser, its error cut down to one line with the column;
3. names (`unknown-name`): only data, payload, actor, comprehension variables and CEL's functions;
4. fields (`unknown-field`): `data.x` / `payload.x` / `actor.x` chains against the JSON Schemas.

Evaluation cost. CEL has no loops, recursion or user-defined functions, so it is not Turing-complete; its
only iteration is the comprehension macros over a list or map. The limits below keep the work of one
evaluation linear in the size of the data, with a small constant:
- at most 4 comprehensions, none nested in another, their bodies at most 64 tokens together (a body runs
  once per item);
- no `map`/`filter`: this CEL implementation builds their result in time quadratic in the list length;
- inside a comprehension, no read of `data`/`payload` unless the schema declares the field a number,
  integer, boolean or short string (else the body could re-scan the data for every item);
- at most 32 reads of data, payload, actor or an item (each read copies the value it selects) and at most
  8 `+` (joining lists or strings copies them);
- `matches()` only with a literal pattern (compiling a pattern taken from the data can take minutes).
The runtime caps case data and payloads at `MAX_DATA_BYTES` of JSON; `bench/guards.py` measures the worst
allowed guards we found over data of that size.

The CEL extension module is loaded lazily from its .so: `import cel` would also import the package's
command-line tool (typer, rich), which costs about 200 ms against about 8 ms for the extension alone.
"""

from __future__ import annotations

import difflib
import functools
import importlib.machinery
import importlib.util
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any, Protocol, cast

from sopflow.engine.errors import GuardRefused

MAX_LENGTH = 1000
MAX_NESTING = 32
MAX_COMPREHENSIONS = 4
MAX_CONCATENATIONS = 8
MAX_READS = 32  # each read of data, payload, actor or an item copies the value it selects
MAX_BODY_TOKENS = 64  # a comprehension body runs once per item: its length multiplies the data size
MAX_DATA_BYTES = 256 * 1024  # enforced by the runtime on case data and payloads; the cost bound assumes it
MAX_SHORT_STRING = 1024  # a string field no longer than this may be read inside a comprehension

ROOTS = ("data", "payload", "actor", "case")
ACTOR_FIELDS = ("id", "roles", "department")
CASE_FIELDS = ("started_by", "started_at", "fired_by", "assignee", "entered_at", "seconds_in_state")
"""What a guard sees of the case, all derived from its audit trail: who started it and when (ISO 8601
text), who fired each earlier event (event → list of user ids), its assignee ("" when none), when it
entered its current state and how many seconds ago."""
COMPREHENSIONS = frozenset({"all", "exists", "exists_one", "map", "filter"})
QUADRATIC_MACROS = frozenset({"map", "filter"})
GLOBAL_FUNCTIONS = frozenset(
    {"size", "int", "uint", "double", "string", "bytes", "timestamp", "duration", "type", "dyn"}
)
METHODS = frozenset(
    {
        "size", "contains", "startsWith", "endsWith", "matches",
        "getFullYear", "getMonth", "getDayOfYear", "getDayOfMonth", "getDate", "getDayOfWeek",
        "getHours", "getMinutes", "getSeconds", "getMilliseconds",
    }
)  # fmt: skip
TYPE_NAMES = frozenset(
    {"int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type"}
)
KEYWORDS = frozenset({"true", "false", "null", "in"})

_ACTOR_SCHEMA: Mapping[str, Any] = MappingProxyType(
    {"properties": MappingProxyType({name: MappingProxyType({}) for name in ACTOR_FIELDS})}
)
_CASE_SCHEMA: Mapping[str, Any] = MappingProxyType(
    {"properties": MappingProxyType({name: MappingProxyType({}) for name in CASE_FIELDS})}
)
_SCOPES: Mapping[str, str] = MappingProxyType(
    {"data": "the case data", "payload": "the event's payload", "actor": "actor", "case": "case"}
)


@dataclass(frozen=True, slots=True)
class ExpressionIssue:
    """One reason a guard was rejected, in the words the definition's author sees."""

    code: str  # "bad-guard", "unknown-name", "unknown-field", "guard-too-complex"
    message: str
    hint: str | None = None


class ExpressionRejected(Exception):
    """A guard failed its checks; `issues` says why, in the order the checks ran."""

    def __init__(self, issues: Sequence[ExpressionIssue]) -> None:
        self.issues: tuple[ExpressionIssue, ...] = tuple(issues)
        super().__init__("; ".join(issue.message for issue in self.issues))


class _Program(Protocol):
    def execute(self, context: dict[str, Any] | None = None) -> Any: ...
    def variables(self) -> list[str]: ...
    def functions(self) -> list[str]: ...


class _Cel(Protocol):
    def compile(self, expression: str) -> _Program: ...


@dataclass(frozen=True, slots=True)
class Guard:
    """A compiled guard: immutable, reusable, equal and hashed by its text."""

    text: str
    program: _Program = field(compare=False, repr=False)
    # field paths the guard reads (data.a.b, i.amount), kept to suggest the has(...) test for a missing field
    chains: tuple[tuple[str, ...], ...] = field(default=(), compare=False, repr=False)

    def evaluate(
        self,
        *,
        data: Mapping[str, Any],
        payload: Mapping[str, Any],
        actor: Mapping[str, Any],
        case: Mapping[str, Any] | None = None,
    ) -> bool:
        """True or False for these values; GuardRefused when the guard cannot decide."""
        result = self.value(data=data, payload=payload, actor=actor, case=case)
        if not isinstance(result, bool):
            raise self._refused(
                f"it gave {result!r} ({type(result).__name__}), not true or false",
                "compare the value, e.g. `data.count > 0` or `data.flag == true`",
            )
        return result

    def value(
        self,
        *,
        data: Mapping[str, Any],
        payload: Mapping[str, Any],
        actor: Mapping[str, Any],
        case: Mapping[str, Any] | None = None,
    ) -> Any:
        """The expression's value for these values (a computed `set`); GuardRefused when it has none."""
        context = {"data": data, "payload": payload, "actor": actor, "case": case or {}}
        try:
            result = self.program.execute(context)
        except KeyError as exc:
            key = str(exc.args[0]) if exc.args else "?"
            raise self._refused(f"the field {key!r} is missing", self._has_hint(key)) from exc
        except Exception as exc:  # the extension raises several types; each means the guard cannot decide
            raise self._refused(_runtime_reason(exc), _runtime_hint(exc)) from exc
        return result

    def _refused(self, reason: str, hint: str | None) -> GuardRefused:
        return GuardRefused(f"the guard `{_shorten(self.text)}` cannot be evaluated: {reason}", hint=hint)

    def _has_hint(self, key: str) -> str:
        for chain in self.chains:
            if key in chain[1:]:
                path = ".".join(chain[: chain.index(key, 1) + 1])
                return f"use has({path}) to test for a field that may be missing"
        return "use has(data.x) to test for a field that may be missing"


def compile_guard(
    text: str,
    *,
    data_schema: Mapping[str, Any] | None = None,
    payload_schema: Mapping[str, Any] | None = None,
) -> Guard:
    """Check and compile a guard; raises ExpressionRejected with every issue of the first failing stage."""
    limits = _limit_issues(text)
    if limits:
        raise ExpressionRejected(limits)
    shape = _analyse(list(_tokens(text)))
    schemas: dict[str, Mapping[str, Any] | None] = {
        "data": data_schema,
        "payload": payload_schema,
        "actor": _ACTOR_SCHEMA,
        "case": _CASE_SCHEMA,
    }
    issues = _cost_issues(shape, schemas)
    if issues:
        raise ExpressionRejected(issues)
    program = _compile(text)
    issues = _name_issues(shape, program) + _field_issues(shape, schemas)
    if issues:
        raise ExpressionRejected(issues)
    paths = tuple((chain.root, *chain.fields) for chain in shape.chains) + shape.item_paths
    return Guard(text, program, paths)


# --- loading CEL ------------------------------------------------------------------------------------------


@functools.cache
def _cel() -> _Cel:
    """The CEL extension module, loaded once on first use."""
    loaded = sys.modules.get("cel.cel")  # someone already imported cel: loading the .so again would panic
    if loaded is None:
        try:
            loaded = _load_extension()
        except (ImportError, OSError, StopIteration):
            return _import_cel()
    return cast(_Cel, loaded)


def _import_cel() -> _Cel:
    """The slow, ordinary way (it imports the package's command-line tool too)."""
    import cel.cel

    return cel.cel


def _load_extension() -> ModuleType:
    spec = importlib.util.find_spec("cel")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the package common-expression-language (module cel) is not installed")
    folder = Path(next(iter(spec.submodule_search_locations)))
    binary = next(p for p in sorted(folder.glob("cel.*")) if p.suffix in {".so", ".pyd"})
    loader = importlib.machinery.ExtensionFileLoader("cel.cel", str(binary))
    module_spec = importlib.util.spec_from_file_location("cel.cel", binary, loader=loader)
    if module_spec is None:
        raise ImportError(f"cannot load {binary}")
    module = importlib.util.module_from_spec(module_spec)
    # registered as cel.cel so that a later `import cel` reuses it: the extension may be initialised once only
    sys.modules["cel.cel"] = module
    try:
        loader.exec_module(module)
    except BaseException:
        del sys.modules["cel.cel"]
        raise
    return module


def _compile(text: str) -> _Program:
    try:
        return _cel().compile(text)
    except ValueError as exc:
        raise ExpressionRejected([_syntax_issue(str(exc))]) from exc


_CEL_ERROR = re.compile(r"<input>:(\d+):(\d+): (.*)")


def _syntax_issue(error: str) -> ExpressionIssue:
    found = _CEL_ERROR.search(error)
    if found is None:
        return ExpressionIssue("bad-guard", f"not valid CEL: {error.splitlines()[0]}")
    line, col, detail = int(found[1]), int(found[2]), found[3].removeprefix("Syntax error: ")
    detail, _, expected = detail.partition(" expecting ")
    where = f"column {col}" if line == 1 else f"line {line} column {col}"
    if "<EOF>" in detail:
        hint = "the expression ends too early: an operator or a bracket lacks its other half"
    elif expected:
        hint = f"CEL expected one of {expected}"
    else:
        hint = (
            "see the CEL language definition: https://github.com/google/cel-spec/blob/master/doc/langdef.md"
        )
    return ExpressionIssue("bad-guard", f"not valid CEL at {where}: {detail}", hint)


# --- tokens -----------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>\s+|//[^\n]*)
  | (?P<string>
        (?:[rR][bB]?|[bB][rR])(?:\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''|"[^"\n\r]*"|'[^'\n\r]*')
      | [bB]?(?:\"\"\"(?:\\[\s\S]|[^\\])*?\"\"\"|'''(?:\\[\s\S]|[^\\])*?'''
               |"(?:\\.|[^"\\\n\r])*"|'(?:\\.|[^'\\\n\r])*')
    )
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<number>0[xX][0-9a-fA-F]+[uU]?|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[uU]?)
  | (?P<op>&&|\|\||==|!=|<=|>=|[-+*/%!<>?:.,\[\]{}()])
  | (?P<other>.)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "string", "name", "number", "op", "other"
    text: str
    start: int  # offset in the guard, 0-based


def _tokens(text: str) -> Iterator[_Token]:
    """CEL tokens without spaces and comments; lazy, so a scan can stop at the first violation."""
    for found in _TOKEN.finditer(text):
        kind = found.lastgroup or "other"
        if kind != "space":
            yield _Token(kind, found.group(), found.start())


def _is(tokens: Sequence[_Token], index: int, text: str) -> bool:
    return 0 <= index < len(tokens) and tokens[index].kind == "op" and tokens[index].text == text


def _is_name(tokens: Sequence[_Token], index: int) -> bool:
    return 0 <= index < len(tokens) and tokens[index].kind == "name"


# --- limits -----------------------------------------------------------------------------------------------


def _limit_issues(text: str) -> list[ExpressionIssue]:
    """Length and nesting, checked on the raw text so a hostile guard never reaches CEL's parser."""
    issues = []
    if len(text) > MAX_LENGTH:
        issues.append(
            ExpressionIssue(
                "guard-too-complex",
                f"the guard is {len(text)} characters long; at most {MAX_LENGTH} are allowed",
                "split the condition across steps, or move the rule into a choice state",
            )
        )
    # a text over the length limit is rejected anyway; a bounded prefix keeps the scan cheap for any input
    deep = _too_deep_at(text[: 4 * MAX_LENGTH])
    if deep is not None:
        issues.append(
            ExpressionIssue(
                "guard-too-complex",
                f"brackets nest more than {MAX_NESTING} deep (at column {deep + 1})",
                "remove redundant parentheses or split the condition",
            )
        )
    return issues


def _too_deep_at(text: str) -> int | None:
    depth = 0
    for token in _tokens(text):
        if token.kind != "op":
            continue
        if token.text in "([{":
            depth += 1
            if depth > MAX_NESTING:
                return token.start
        elif token.text in ")]}":
            depth = max(depth - 1, 0)
    return None


@dataclass(frozen=True, slots=True)
class _Macro:
    name: str
    variable: str | None
    start: int  # offset of the macro's name
    body: int  # token index where its body begins: the variable is bound from there to the closing paren
    nested: bool


@dataclass(frozen=True, slots=True)
class _Chain:
    root: str  # data, payload or actor
    fields: tuple[str, ...]
    start: int
    inside: str | None  # the comprehension whose body reads it, if any


@dataclass(frozen=True, slots=True)
class _Shape:
    """What the token scan learned about a guard."""

    macros: tuple[_Macro, ...]
    concatenations: int
    reads: int  # references to data, payload, actor and comprehension variables
    body_tokens: int  # tokens inside comprehension bodies, all together
    unknown_names: tuple[_Token, ...]
    calls: tuple[_Token, ...]  # names of called functions and methods
    chains: tuple[_Chain, ...]
    item_paths: tuple[tuple[str, ...], ...]  # `i.amount` inside `.all(i, ...)`: the variable, then fields
    dynamic_patterns: tuple[int, ...]  # offsets of matches( calls whose pattern is not a literal


def _analyse(tokens: Sequence[_Token]) -> _Shape:
    frames: list[_Macro | None] = []  # one per open bracket: the comprehension it belongs to, if any
    macros: list[_Macro] = []
    names: dict[str, list[_Token]] = {"call": [], "unknown": [], "root": [], "variable": []}
    chains: list[_Chain] = []
    items: list[tuple[str, ...]] = []
    patterns: list[int] = []
    plus = body = 0
    for i, token in enumerate(tokens):
        scopes = [m for m in frames if m is not None and m.body <= i]
        body += bool(scopes)
        if token.kind == "op" and token.text in "([{":
            macro = _macro_opened(tokens, i, frames)
            frames.append(macro)
            if macro is not None:
                macros.append(macro)
        elif token.kind == "op" and token.text in ")]}":
            if frames:
                frames.pop()
        elif token.kind == "op" and token.text == "+":
            plus += 1
        elif token.kind == "name":
            kind = _classify(tokens, i, scopes)
            if kind in names:
                names[kind].append(token)
            if kind == "root":
                inside = scopes[-1].name if scopes else None
                chains.append(_Chain(token.text, _chain_fields(tokens, i), token.start, inside))
            elif kind == "variable":
                items.append((token.text, *_chain_fields(tokens, i)))
            if token.text == "matches" and _is(tokens, i - 1, ".") and not _literal_argument(tokens, i + 1):
                patterns.append(token.start)
    return _Shape(
        macros=tuple(macros),
        concatenations=plus,
        reads=len(names["root"]) + len(names["variable"]),
        body_tokens=body,
        unknown_names=tuple(names["unknown"]),
        calls=tuple(names["call"]),
        chains=tuple(chains),
        item_paths=tuple(items),
        dynamic_patterns=tuple(patterns),
    )


def _macro_opened(tokens: Sequence[_Token], paren: int, frames: Sequence[_Macro | None]) -> _Macro | None:
    """The comprehension `.name(var, body)` whose parenthesis is at `paren`, if it is one."""
    if not (_is(tokens, paren, "(") and _is(tokens, paren - 2, ".") and _is_name(tokens, paren - 1)):
        return None
    name = tokens[paren - 1]
    if name.text not in COMPREHENSIONS:
        return None
    variable = tokens[paren + 1].text if _is_name(tokens, paren + 1) and _is(tokens, paren + 2, ",") else None
    nested = any(frame is not None for frame in frames)
    return _Macro(name.text, variable, name.start, paren + 3, nested)


def _classify(tokens: Sequence[_Token], i: int, scopes: Sequence[_Macro]) -> str:
    """The role of the name at i: "call", "root" (data, payload, actor), "variable" (a comprehension's),
    "unknown", or "other"."""
    name = tokens[i].text
    if _is(tokens, i + 1, "("):
        return "call"
    if _is(tokens, i - 1, ".") or name in KEYWORDS or name in TYPE_NAMES:
        return "other"  # a field, a keyword, or a type such as int in type(x) == int
    if _declares_variable(tokens, i):
        return "other"
    if any(scope.variable == name for scope in scopes):
        return "variable"
    return "root" if name in ROOTS else "unknown"


def _declares_variable(tokens: Sequence[_Token], i: int) -> bool:
    """The `x` in `.all(x, ...)`."""
    return (
        _is(tokens, i - 1, "(")
        and _is(tokens, i + 1, ",")
        and _is_name(tokens, i - 2)
        and tokens[i - 2].text in COMPREHENSIONS
        and _is(tokens, i - 3, ".")
    )


def _chain_fields(tokens: Sequence[_Token], root: int) -> tuple[str, ...]:
    """The fields selected after the root at index root: `.name` or `["name"]`, up to a method call."""
    fields: list[str] = []
    k = root + 1
    while True:
        if _is(tokens, k, ".") and _is_name(tokens, k + 1) and not _is(tokens, k + 2, "("):
            fields.append(tokens[k + 1].text)
            k += 2
        elif _is(tokens, k, "[") and _plain_string(tokens, k + 1) and _is(tokens, k + 2, "]"):
            fields.append(tokens[k + 1].text[1:-1])
            k += 3
        else:
            return tuple(fields)


def _plain_string(tokens: Sequence[_Token], index: int) -> bool:
    if not (0 <= index < len(tokens) and tokens[index].kind == "string"):
        return False
    text = tokens[index].text
    return text[0] in "\"'" and not text.startswith(('"""', "'''")) and "\\" not in text


def _literal_argument(tokens: Sequence[_Token], paren: int) -> bool:
    return (
        _is(tokens, paren, "(")
        and paren + 1 < len(tokens)
        and tokens[paren + 1].kind == "string"
        and _is(tokens, paren + 2, ")")
    )


def _cost_issues(shape: _Shape, schemas: Mapping[str, Mapping[str, Any] | None]) -> list[ExpressionIssue]:
    issues = [_too_complex(f"`{m.name}` is not allowed", _QUADRATIC_HINT) for m in _quadratic(shape)]
    if len(shape.macros) > MAX_COMPREHENSIONS:
        issues.append(
            _too_complex(
                f"the guard uses {len(shape.macros)} comprehensions; "
                f"at most {MAX_COMPREHENSIONS} are allowed",
                "split the condition across steps or a choice state",
            )
        )
    issues += [
        _too_complex(
            f"`{m.name}` at column {m.start + 1} is inside another comprehension",
            "nested comprehensions take time that grows with the product of the list sizes; "
            "test the inner list in a separate condition joined with &&",
        )
        for m in shape.macros
        if m.nested
    ]
    if shape.concatenations > MAX_CONCATENATIONS:
        issues.append(
            _too_complex(
                f"the guard uses `+` {shape.concatenations} times; at most {MAX_CONCATENATIONS} are allowed",
                "joining lists or strings copies them; compare the parts separately",
            )
        )
    issues += [
        _too_complex(
            f"the pattern given to matches() at column {offset + 1} must be a string literal",
            "a pattern taken from the data could take minutes to compile; write it in the guard, "
            'e.g. data.code.matches("^[A-Z]{3}-[0-9]+$")',
        )
        for offset in shape.dynamic_patterns
    ]
    return issues + _size_issues(shape) + _body_issues(shape, schemas)


def _size_issues(shape: _Shape) -> list[ExpressionIssue]:
    issues = []
    if shape.reads > MAX_READS:
        issues.append(
            _too_complex(
                f"the guard reads data, payload, actor or a comprehension variable {shape.reads} times; "
                f"at most {MAX_READS} reads are allowed",
                "each read copies the value it selects; simplify the condition or split it across steps",
            )
        )
    if shape.body_tokens > MAX_BODY_TOKENS:
        issues.append(
            _too_complex(
                f"the comprehension bodies are {shape.body_tokens} tokens long together; "
                f"at most {MAX_BODY_TOKENS} are allowed",
                "a body runs once per item; keep the per-item test short, e.g. i.amount <= 1000",
            )
        )
    return issues


_QUADRATIC_HINT = (
    "this CEL implementation builds the result of map() and filter() in time that grows with the square of "
    "the list length; use all(), exists() or exists_one(), e.g. data.items.exists(i, i.urgent)"
)


def _quadratic(shape: _Shape) -> list[_Macro]:
    return [m for m in shape.macros if m.name in QUADRATIC_MACROS]


def _too_complex(message: str, hint: str) -> ExpressionIssue:
    return ExpressionIssue("guard-too-complex", message, hint)


def _body_issues(shape: _Shape, schemas: Mapping[str, Mapping[str, Any] | None]) -> list[ExpressionIssue]:
    """Inside a comprehension, data and payload may be read only where the schema bounds the value."""
    issues = []
    for chain in shape.chains:
        if chain.inside is None or chain.root == "actor":
            continue
        leaf = _leaf_schema(schemas[chain.root], chain.fields)
        if leaf is not None and _bounded_scalar(leaf):
            continue
        path = ".".join((chain.root, *chain.fields))
        issues.append(
            _too_complex(
                f"`{path}` is read inside {chain.inside}(), once per item, and its size is not bounded",
                f"declare {path} in the schema as a number, integer, boolean or string with maxLength "
                f"<= {MAX_SHORT_STRING}, or move the test out of the comprehension",
            )
        )
    return issues


def _leaf_schema(schema: Mapping[str, Any] | None, fields: Sequence[str]) -> Mapping[str, Any] | None:
    current: Any = schema
    for name in fields:
        properties = current.get("properties") if isinstance(current, Mapping) else None
        if not isinstance(properties, Mapping) or name not in properties:
            return None
        current = properties[name]
    return current if isinstance(current, Mapping) and fields else None


def _bounded_scalar(schema: Mapping[str, Any]) -> bool:
    if "const" in schema or "enum" in schema:
        return True
    declared = schema.get("type")
    types = [declared] if isinstance(declared, str) else list(declared or [])
    max_length = schema.get("maxLength")
    short = isinstance(max_length, int) and max_length <= MAX_SHORT_STRING
    small = {"integer", "number", "boolean", "null", *(["string"] if short else [])}
    return bool(types) and all(t in small for t in types)


# --- names and fields -------------------------------------------------------------------------------------


def _name_issues(shape: _Shape, program: _Program) -> list[ExpressionIssue]:
    variables = {m.variable for m in shape.macros if m.variable}
    issues = [_shadowing(name) for name in sorted(variables & set(ROOTS))]
    reported = {token.text for token in shape.unknown_names}
    issues += [_unknown_name(t.text, t.start, variables) for t in _first_each(shape.unknown_names)]
    known = set(ROOTS) | variables | TYPE_NAMES | reported
    issues += [_unknown_name(name, None, variables) for name in program.variables() if name not in known]
    allowed = GLOBAL_FUNCTIONS | METHODS | COMPREHENSIONS | {"has"}
    called = {token.text for token in shape.calls}
    issues += [_unknown_function(t.text, t.start) for t in _first_each(shape.calls) if t.text not in allowed]
    issues += [
        _unknown_function(name, None)
        for name in program.functions()
        if _is_named_function(name) and name not in allowed and name not in called
    ]
    return issues


def _first_each(tokens: Sequence[_Token]) -> list[_Token]:
    """One token per distinct name, the first occurrence."""
    first: dict[str, _Token] = {}
    for token in tokens:
        first.setdefault(token.text, token)
    return list(first.values())


def _is_named_function(name: str) -> bool:
    """CEL lists operators as functions too (`_+_`, `@in`, `!_`); only named functions are checked."""
    return bool(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name))


def _shadowing(name: str) -> ExpressionIssue:
    return ExpressionIssue(
        "bad-guard",
        f"the comprehension variable `{name}` hides the guard's variable {name}",
        "name the variable after the item, e.g. data.items.all(item, item.amount > 0)",
    )


def _unknown_name(name: str, start: int | None, variables: set[str]) -> ExpressionIssue:
    where = f" at column {start + 1}" if start is not None else ""
    guess = difflib.get_close_matches(name, [*ROOTS, *sorted(variables)], n=1)
    if name in variables:
        hint = f"`{name}` is defined only inside the comprehension that declares it"
    elif guess:
        hint = f"did you mean `{guess[0]}`?"
    else:
        hint = (
            "a guard reads data (the case's data), payload (the event's fields) "
            "and actor (id, roles, department)"
        )
    return ExpressionIssue("unknown-name", f"unknown name `{name}`{where}", hint)


def _unknown_function(name: str, start: int | None) -> ExpressionIssue:
    where = f" at column {start + 1}" if start is not None else ""
    choices = sorted(GLOBAL_FUNCTIONS | METHODS | {"has", "all", "exists", "exists_one"})
    guess = difflib.get_close_matches(name, choices, n=1)
    hint = f"did you mean `{guess[0]}`?" if guess else f"the functions a guard may call: {', '.join(choices)}"
    return ExpressionIssue("unknown-name", f"unknown function `{name}`{where}", hint)


def _field_issues(shape: _Shape, schemas: Mapping[str, Mapping[str, Any] | None]) -> list[ExpressionIssue]:
    issues: list[ExpressionIssue] = []
    seen: set[tuple[str, ...]] = set()
    for chain in shape.chains:
        issue = _chain_issue(chain, schemas[chain.root])
        key = (chain.root, *chain.fields)
        if issue is not None and key not in seen:
            seen.add(key)
            issues.append(issue)
    return issues


def _chain_issue(chain: _Chain, schema: Mapping[str, Any] | None) -> ExpressionIssue | None:
    """The first field of the chain its schema does not declare, where the schema lists properties."""
    current: Any = schema
    for depth, name in enumerate(chain.fields):
        properties = current.get("properties") if isinstance(current, Mapping) else None
        if not isinstance(properties, Mapping):
            return None
        if name not in properties:
            return _unknown_field(chain, depth, sorted(str(p) for p in properties))
        current = properties[name]
    return None


def _unknown_field(chain: _Chain, depth: int, known: list[str]) -> ExpressionIssue:
    parent = ".".join((chain.root, *chain.fields[:depth]))
    name = chain.fields[depth]
    guess = difflib.get_close_matches(name, known, n=1)
    if guess:
        hint = f"did you mean `{parent}.{guess[0]}`?"
    elif known:
        listed = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
        hint = f"the fields of {parent}: {listed}"
    else:
        hint = f"{parent} declares no fields"
    scope = _SCOPES[chain.root] if depth == 0 else f"`{parent}`"
    return ExpressionIssue("unknown-field", f"`{parent}.{name}` is not a field of {scope}", hint)


# --- runtime messages -------------------------------------------------------------------------------------


def _runtime_reason(exc: Exception) -> str:
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, TypeError) and first.startswith("No such overload"):
        return "the operation does not accept these types of value (CEL does not convert between types)"
    if isinstance(exc, ZeroDivisionError):
        return "division by zero"
    return first.split(". ")[0]


def _runtime_hint(exc: Exception) -> str | None:
    if isinstance(exc, TypeError):
        return "convert explicitly with int(), double() or string(), or check the field's type in the schema"
    if isinstance(exc, IndexError):
        return "test the list's length with size() first"
    if isinstance(exc, ZeroDivisionError):
        return "test that the divisor is not zero first, e.g. data.b != 0 && data.a / data.b > 2"
    return None


def _shorten(text: str, limit: int = 120) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
