"""Hardened YAML reading: untrusted text in, plain data out, with the line and column of every node.

Definitions come from people and repositories we do not control, so this module treats YAML as hostile:

- the size is capped before anything is parsed (`read_yaml` stats the file, then reads a bounded amount);
- the data is built from PyYAML's event stream with an explicit stack, because `yaml.compose` and the
  constructors recurse and die on deeply nested input; depth is limited while parsing;
- an alias reuses the anchored value (nothing is copied), but counts as every node it stands for, so an
  alias bomb ("billion laughs") hits `max_nodes` after a handful of events;
- only YAML 1.2 core-schema values exist: no language tags, no merge keys, no duplicate keys, no
  YAML 1.1 booleans (`on`, `yes` and `no` stay strings; `on:` is a key of the definition language),
  no dates (2026-10-01 stays a string);
- one document per file.

Every failure raises `DefinitionError` with one `Problem` that points at the line and column.
"""

from __future__ import annotations

import math
import pathlib
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

import yaml

from sopflow.engine.definition.model import Path
from sopflow.engine.errors import DefinitionError, Problem

Position = tuple[int, int]
"""1-based (line, column)."""

# libyaml is much faster on long lines; both parsers build their event stream without recursion.
_LOADER: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_CORE = "tag:yaml.org,2002:"
_SCALAR_TAGS = frozenset({"str", "int", "float", "bool", "null"})
_ALLOWED_TAGS = "!!str, !!int, !!float, !!bool, !!null, !!map, !!seq"
_BOM = "\ufeff"
# The characters YAML does not allow in a stream (the set PyYAML's reader refuses); checked up front so
# the position is exact whichever parser runs, and lone surrogates never reach libyaml's UTF-8 encoder.
# Written as the complement of what YAML allows ([^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd
# \U00010000-\U0010ffff]), the same set: `re` compiles a class range by range, character by character,
# and the allowed form's 63,000 characters took ~4 ms at every start.
_NOT_PRINTABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufffe\uffff]")

# YAML 1.2.2 core schema, section 10.3.2.
_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_TRUE = frozenset({"true", "True", "TRUE"})
_FALSE = frozenset({"false", "False", "FALSE"})
_INT10 = re.compile(r"[-+]?[0-9]+")
_INT8 = re.compile(r"0o[0-7]+")
_INT16 = re.compile(r"0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_INF = re.compile(r"[-+]?\.(inf|Inf|INF)")
_NAN = re.compile(r"\.(nan|NaN|NAN)")


@dataclass(frozen=True, slots=True)
class Limits:
    """How much one YAML file may hold. The defaults are far above any real definition and far below
    what would hurt the process reading it."""

    max_bytes: int = 1_048_576
    max_depth: int = 64
    max_nodes: int = 100_000
    """Counted after alias expansion: an alias counts as every node of the value it repeats."""


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class Document:
    """One parsed YAML file: its plain data and where each part of it was written."""

    file: str
    """The path as the user gave it, used in messages."""
    text: str
    data: Any
    """Plain JSON-like data: dict (insertion-ordered) / list / str / int / float / bool / None."""
    positions: Mapping[Path, Position]
    """Where each value node starts."""
    key_positions: Mapping[Path, Position]
    """For a path whose last element is a mapping key: where the key starts."""

    def where(self, path: Path, *, key: bool = False) -> Position:
        """(line, col) of the node at path (of its key if key=True and known); falls back to the
        nearest ancestor that has a position, then (1, 1)."""
        if key and path in self.key_positions:
            return self.key_positions[path]
        for end in range(len(path), -1, -1):
            found = self.positions.get(path[:end])
            if found is not None:
                return found
        return (1, 1)


def parse_yaml(text: str | bytes, file: str, limits: Limits = DEFAULT_LIMITS) -> Document:
    """Parse one YAML document from untrusted text (bytes must be UTF-8).

    Raises DefinitionError, and nothing else, for any input it refuses.
    """
    source = ""
    try:
        source = _source_text(text, file, limits)
        builder = _Builder(file, limits)
        builder.feed(yaml.parse(source, Loader=_LOADER))
        return builder.document(source)
    except yaml.MarkedYAMLError as err:
        raise _syntax_error(file, source, err, limits) from None
    except yaml.YAMLError as err:
        raise _error(file, (1, 1), "yaml-syntax", f"not valid YAML: {err}") from None
    except RecursionError:
        raise _error(file, (1, 1), "yaml-too-deep", "the YAML is nested too deeply to read") from None
    except MemoryError:
        raise _error(file, (1, 1), "yaml-too-large", "the YAML is too large to read") from None


def read_yaml(path: pathlib.Path, limits: Limits = DEFAULT_LIMITS, display: str | None = None) -> Document:
    """Read and parse a YAML file, refusing one larger than `limits.max_bytes` before parsing it.

    `display` is how the file is named in messages (default: the path as given).
    """
    file = display if display is not None else str(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise _error(file, (1, 1), "yaml-read", "not a regular file")
        if info.st_size > limits.max_bytes:
            raise _too_large(file, info.st_size, limits)
        # The size may change between stat and read (or lie, for special files): read one byte more
        # than allowed so parse_yaml sees the excess and refuses it.
        with path.open("rb") as handle:
            raw = handle.read(limits.max_bytes + 1)
    except OSError as err:
        raise _error(file, (1, 1), "yaml-read", f"cannot read the file: {err.strerror or err}") from None
    return parse_yaml(raw, file, limits)


def _error(file: str, where: Position, code: str, message: str, hint: str | None = None) -> DefinitionError:
    return DefinitionError([Problem(file, where[0], where[1], code, message, hint)])


def _too_large(file: str, size: int, limits: Limits) -> DefinitionError:
    return _error(
        file,
        (1, 1),
        "yaml-too-large",
        f"the file is {size:,} bytes; at most {limits.max_bytes:,} are allowed",
        "split the process into smaller definitions",
    )


def _source_text(text: str | bytes, file: str, limits: Limits) -> str:
    """The text to parse: size checked, decoded, BOM removed, free of characters YAML forbids."""
    if isinstance(text, bytes):
        if len(text) > limits.max_bytes:
            raise _too_large(file, len(text), limits)
        text = _decode(text, file)
    else:
        # Every character is at least one byte: a cheap refusal before measuring the UTF-8 size.
        if len(text) > limits.max_bytes:
            raise _too_large(file, len(text), limits)
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > limits.max_bytes:
            raise _too_large(file, size, limits)
    text = text.removeprefix(_BOM)
    bad = _NOT_PRINTABLE.search(text)
    if bad is not None:
        char = ord(bad.group())
        raise _error(
            file,
            _line_col(text, bad.start()),
            "yaml-encoding",
            f"the character U+{char:04X} is not allowed in YAML",
            "remove it; control characters (other than tab and line breaks) cannot appear in YAML",
        )
    return text


def _decode(raw: bytes, file: str) -> str:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise _error(
            file,
            (1, 1),
            "yaml-encoding",
            "the file is UTF-16; YAML files must be UTF-8",
            "save the file as UTF-8",
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise _error(
            file,
            _byte_line_col(raw, err.start),
            "yaml-encoding",
            f"the file is not valid UTF-8 (byte 0x{raw[err.start]:02x})",
            "save the file as UTF-8",
        ) from None


def _line_col(text: str, index: int) -> Position:
    return text.count("\n", 0, index) + 1, index - (text.rfind("\n", 0, index) + 1) + 1


def _byte_line_col(raw: bytes, index: int) -> Position:
    line_start = raw.rfind(b"\n", 0, index) + 1
    prefix = raw[line_start:index].removeprefix(b"\xef\xbb\xbf")
    return raw.count(b"\n", 0, index) + 1, len(prefix.decode("utf-8", "replace")) + 1


class _Mark(Protocol):
    """A place in the stream, from either parser (PyYAML's and libyaml's marks are different classes)."""

    line: int
    column: int


def _mark(mark: _Mark | None) -> Position:
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


_SYNTAX_HINTS = (
    ("\\t", "indent with spaces; YAML does not allow tabs for indentation"),
    ("(a tab)", "indent with spaces; YAML does not allow tabs for indentation"),
    ("mapping values are not allowed", 'a value that contains ": " must be quoted, e.g. title: "a: b"'),
    ("could not find expected ':'", "each line of a mapping needs `key: value`; check the indentation"),
    ("did not find expected key", "check the indentation: keys of one mapping must line up"),
    ("did not find expected '-'", "check the indentation: items of one list must line up"),
    ("found undefined tag handle", "remove the tag; sopflow reads plain data"),
)


def _syntax_error(file: str, source: str, err: yaml.MarkedYAMLError, limits: Limits) -> DefinitionError:
    where = _mark(err.problem_mark or err.context_mark)
    problem = err.problem or err.context or "not valid YAML"
    if "maximum nesting depth" in problem:
        # Newer libyaml (PyYAML 6.0.4) stops deep flow nesting itself, at 1,000 levels, while scanning
        # ahead, before the events that the depth limit is checked on are made: the same refusal.
        return _error(
            file,
            where,
            "yaml-too-deep",
            f"the YAML is nested more than {limits.max_depth} levels deep",
            "flatten the structure",
        )
    lines = source.splitlines()
    # libyaml does not name the character it stumbled on; a tab is by far the most common one.
    on_tab = where[0] <= len(lines) and lines[where[0] - 1][where[1] - 1 : where[1]] == "\t"
    if on_tab and "\\t" not in problem:
        problem += " (a tab)"
    hint = next((h for needle, h in _SYNTAX_HINTS if needle in problem), None)
    if hint is None and err.context:
        hint = err.context + (f" (line {err.context_mark.line + 1})" if err.context_mark else "")
    return _error(file, where, "yaml-syntax", f"not valid YAML: {problem}", hint)


def _short_tag(tag: str) -> str:
    return "!!" + tag.removeprefix(_CORE) if tag.startswith(_CORE) else tag


def _core_value(text: str) -> Any:
    """The YAML 1.2 core-schema value of a plain scalar. Raises ValueError for an integer with more
    digits than Python converts."""
    if text in _NULLS:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if _INT10.fullmatch(text):
        return int(text)
    if _INT8.fullmatch(text):
        return int(text[2:], 8)
    if _INT16.fullmatch(text):
        return int(text[2:], 16)
    if _FLOAT.fullmatch(text):
        return float(text)
    if _INF.fullmatch(text):
        return -math.inf if text.startswith("-") else math.inf
    if _NAN.fullmatch(text):
        return math.nan
    return text


def _fits_tag(value: Any, kind: str) -> bool:
    if kind == "null":
        return value is None
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, int | float) and not isinstance(value, bool)  # float


@dataclass(frozen=True, slots=True)
class _Anchored:
    """A value with an anchor, and what repeating it costs."""

    value: Any
    nodes: int
    height: int
    key: str | None
    """The text to use when an alias of it is a mapping key (None for a collection)."""


class _Frame:
    """An open mapping or sequence while its events arrive."""

    __slots__ = ("anchor", "container", "height", "key", "nodes_before", "path")

    def __init__(
        self, container: dict[str, Any] | list[Any], path: Path, anchor: str | None, nodes_before: int
    ) -> None:
        self.container = container
        self.path = path
        self.anchor = anchor
        self.nodes_before = nodes_before
        self.height = 0
        self.key: str | None = None
        """In a mapping: the key whose value comes next; None while a key is expected."""


class _Builder:
    """Builds plain data from a YAML event stream with an explicit stack, enforcing the limits."""

    def __init__(self, file: str, limits: Limits) -> None:
        self.file = file
        self.limits = limits
        self.stack: list[_Frame] = []
        self.anchors: dict[str, _Anchored] = {}
        self.positions: dict[Path, Position] = {}
        self.key_positions: dict[Path, Position] = {}
        self.nodes = 0
        self.documents = 0
        self.root: Any = None
        self.root_empty = True

    def fail(self, where: Position, code: str, message: str, hint: str | None = None) -> DefinitionError:
        return _error(self.file, where, code, message, hint)

    def feed(self, events: Iterable[yaml.Event]) -> None:
        for event in events:
            if isinstance(event, yaml.ScalarEvent):
                self.scalar(event)
            elif isinstance(event, yaml.AliasEvent):
                self.alias(event)
            elif isinstance(event, yaml.MappingStartEvent):
                self.start(event, {})
            elif isinstance(event, yaml.SequenceStartEvent):
                self.start(event, [])
            elif isinstance(event, yaml.CollectionEndEvent):
                self.end()
            elif isinstance(event, yaml.DocumentStartEvent):
                self.document_start(event)

    def document(self, text: str) -> Document:
        if self.documents == 0 or self.root_empty:
            raise self.fail(
                (1, 1),
                "yaml-empty",
                "the file holds no YAML data",
                "a definition is a YAML mapping, starting with `id:`",
            )
        return Document(
            self.file, text, self.root, MappingProxyType(self.positions), MappingProxyType(self.key_positions)
        )

    def document_start(self, event: yaml.DocumentStartEvent) -> None:
        self.documents += 1
        if self.documents > 1:
            raise self.fail(
                _mark(event.start_mark),
                "yaml-multiple-documents",
                "the file holds more than one YAML document",
                "put each definition in its own file and remove the `---` line",
            )

    def count(self, nodes: int, where: Position) -> None:
        self.nodes += nodes
        if self.nodes > self.limits.max_nodes:
            raise self.fail(
                where,
                "yaml-too-many-nodes",
                f"the file holds more than {self.limits.max_nodes:,} values "
                "(counting each alias as the values it repeats)",
                "split the definition, or repeat fewer aliases",
            )

    def check_depth(self, depth: int, where: Position) -> None:
        if depth > self.limits.max_depth:
            raise self.fail(
                where,
                "yaml-too-deep",
                f"the YAML is nested more than {self.limits.max_depth} levels deep",
                "flatten the structure",
            )

    def scalar(self, event: yaml.ScalarEvent) -> None:
        where = _mark(event.start_mark)
        value = self.resolve(event, where)
        self.count(1, where)
        key = value if isinstance(value, str) else event.value
        # A plain `<<` is YAML 1.1's merge key; quoted, it is an ordinary string.
        merge = event.value == "<<" and event.tag is None and event.implicit[0]
        self.place(value, where, key, merge=merge)
        if not self.stack and not (value is None and event.value == "" and event.tag is None):
            self.root_empty = False
        if event.anchor is not None:
            self.anchors[event.anchor] = _Anchored(value, 1, 0, key)

    def resolve(self, event: yaml.ScalarEvent, where: Position) -> Any:
        tag = event.tag
        if tag is not None:
            self.check_tag(tag, _SCALAR_TAGS, where)
        if tag is None and not event.implicit[0]:
            return event.value  # quoted or block scalars are always strings
        kind = "plain" if tag is None else tag.removeprefix(_CORE)
        if kind == "str":
            return event.value
        try:
            value = _core_value(event.value)
        except ValueError:
            raise self.fail(
                where, "yaml-number", "the number has too many digits", "quote it if it is text"
            ) from None
        if kind != "plain" and not _fits_tag(value, kind):
            raise self.fail(
                where,
                "yaml-tag",
                f"`{event.value}` is not a valid !!{kind}",
                "remove the tag, or write a value of that type",
            )
        return float(value) if kind == "float" else value

    def check_tag(self, tag: str, allowed: frozenset[str], where: Position) -> None:
        if tag.startswith(_CORE) and tag.removeprefix(_CORE) in allowed:
            return
        raise self.fail(
            where,
            "yaml-tag",
            f"the tag `{_short_tag(tag)}` is not allowed here",
            f"sopflow reads plain data only: remove the tag (allowed: {_ALLOWED_TAGS})",
        )

    def alias(self, event: yaml.AliasEvent) -> None:
        where = _mark(event.start_mark)
        name = event.anchor or ""
        if any(frame.anchor == name for frame in self.stack):
            raise self.fail(
                where,
                "yaml-alias",
                f"the alias `*{name}` refers to a value that contains it",
                "a value cannot include itself; repeat the part you need",
            )
        anchored = self.anchors.get(name)
        if anchored is None:
            raise self.fail(
                where,
                "yaml-alias",
                f"the alias `*{name}` has no anchor `&{name}` above it",
                "define the anchor before the alias, or write the value out",
            )
        self.count(anchored.nodes, where)
        self.check_depth(len(self.stack) + anchored.height, where)
        self.place(anchored.value, where, anchored.key)
        if self.stack:
            self.stack[-1].height = max(self.stack[-1].height, anchored.height)
        else:
            self.root_empty = False

    def start(
        self, event: yaml.MappingStartEvent | yaml.SequenceStartEvent, container: dict[str, Any] | list[Any]
    ) -> None:
        where = _mark(event.start_mark)
        if event.tag is not None:
            self.check_tag(event.tag, frozenset({"map" if isinstance(container, dict) else "seq"}), where)
        self.check_depth(len(self.stack) + 1, where)
        nodes_before = self.nodes
        self.count(1, where)
        path = self.place(container, where, None)
        self.stack.append(_Frame(container, path, event.anchor, nodes_before))
        self.root_empty = False

    def end(self) -> None:
        frame = self.stack.pop()
        height = frame.height + 1
        if self.stack:
            self.stack[-1].height = max(self.stack[-1].height, height)
        if frame.anchor is not None:
            self.anchors[frame.anchor] = _Anchored(
                frame.container, self.nodes - frame.nodes_before, height, None
            )

    def place(self, value: Any, where: Position, key: str | None, *, merge: bool = False) -> Path:
        """Put a node into the open collection (or make it the root) and record where it was."""
        if not self.stack:
            self.root = value
            self.positions[()] = where
            return ()
        frame = self.stack[-1]
        if isinstance(frame.container, list):
            path = (*frame.path, len(frame.container))
            frame.container.append(value)
        elif frame.key is None:
            self.take_key(frame, key, where, merge=merge)
            return frame.path
        else:
            path = (*frame.path, frame.key)
            frame.container[frame.key] = value
            frame.key = None
        self.positions[path] = where
        return path

    def take_key(self, frame: _Frame, key: str | None, where: Position, *, merge: bool) -> None:
        if key is None:
            raise self.fail(
                where,
                "yaml-key",
                "a mapping key must be a plain value, not a list or mapping",
                "write the key as a string",
            )
        if merge:
            raise self.fail(
                where,
                "yaml-merge-key",
                "merge keys (`<<`) are not supported",
                "merge keys are not part of YAML 1.2: repeat the keys you need",
            )
        path = (*frame.path, key)
        if key in frame.container:
            first = self.key_positions.get(path, (0, 0))[0]
            raise self.fail(
                where,
                "yaml-duplicate-key",
                f"the key `{key}` appears twice in this mapping",
                f"the first `{key}` is on line {first}; keep one of them",
            )
        self.key_positions[path] = where
        frame.key = key
