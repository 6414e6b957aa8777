"""Check definition and org files end to end: read, schema, build, meaning; one report for them all.

This is what `sopflow validate` and every command that loads a definition call. A broken file never
stops the others from being checked: each file's problems are collected, so one run shows everything.
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

from sopflow.engine.definition.build import build_definition, build_org
from sopflow.engine.definition.loader import Document, read_yaml
from sopflow.engine.definition.model import Definition, Org
from sopflow.engine.definition.schema import check_definition_schema, check_org_schema
from sopflow.engine.definition.semantic import check_definition, check_org, sort_problems
from sopflow.engine.definition.semantic.context import did_you_mean
from sopflow.engine.definition.semantic.subprocesses import check_links
from sopflow.engine.errors import DefinitionError, Problem, UsageError

ORG_FILE = "org.yaml"
LONG_NAME = 60
"""A name quoted in a message longer than this is cut short."""
YAML_SUFFIXES = (".yaml", ".yml")
SCENARIO_SUFFIXES = (".test.yaml", ".test.yml")
"""Scenario files (`sopflow test`) kept beside the definitions: a folder's definitions leave them out."""


@dataclass(frozen=True)
class Report:
    """What validation found: the definitions without errors, the org (if any), and every problem."""

    definitions: tuple[Definition, ...]
    org: Org | None
    problems: tuple[Problem, ...]
    sources: Mapping[str, str] = field(default_factory=dict)
    """The text each definition and the org was checked from, by file: what a deploy stores."""
    files: tuple[str, ...] = ()
    """Every file checked, whether or not it could be read (the org found beside them included)."""
    org_beside: bool = False
    """The org was not given (as a file, or in a folder given) but found beside a definition file."""

    @property
    def ok(self) -> bool:
        """True when no problem is an error (warnings are allowed)."""
        return not any(p.severity == "error" for p in self.problems)

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "error")

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "warning")


@dataclass(frozen=True, slots=True)
class _Read:
    """One file as read: its document, or the problems that kept it from being read."""

    path: pathlib.Path
    doc: Document | None
    problems: tuple[Problem, ...]


def _has_errors(problems: Iterable[Problem]) -> bool:
    return any(p.severity == "error" for p in problems)


def expand_paths(paths: Sequence[pathlib.Path]) -> list[pathlib.Path]:
    """The files to check: each file given, and every *.yaml/*.yml of each folder given, in name order,
    except scenario files (*.test.yaml), which `sopflow test` reads."""
    if not paths:
        raise UsageError("no file or folder given", hint="give definition files or a folder of them")
    files: list[pathlib.Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(
                p
                for p in path.iterdir()
                if p.suffix in YAML_SUFFIXES and not p.name.endswith(SCENARIO_SUFFIXES) and p.is_file()
            )
            if not found:
                raise UsageError(
                    f"{path}: the folder holds no .yaml or .yml file", hint="give a definition file"
                )
            files += found
        elif path.is_file():
            if path.name.endswith(SCENARIO_SUFFIXES):
                raise UsageError(
                    f"{path}: a scenario file, not a definition", hint=f"run it with `sopflow test {path}`"
                )
            files.append(path)
        else:
            raise UsageError(f"{path}: no such file or folder", hint="check the path")
    return list(dict.fromkeys(files))


def _read(path: pathlib.Path) -> _Read:
    try:
        return _Read(path, read_yaml(path), ())
    except DefinitionError as err:
        return _Read(path, None, err.problems)
    except OSError as err:
        raise UsageError(f"{path}: cannot read the file: {err.strerror or err}") from err


def _is_org(read: _Read) -> bool:
    if read.path.name == ORG_FILE:
        return True
    data = read.doc.data if read.doc is not None else None
    return isinstance(data, dict) and "users" in data


def _org_problems(doc: Document) -> tuple[Org | None, list[Problem]]:
    problems = check_org_schema(doc)
    if _has_errors(problems):
        return None, problems
    org = build_org(doc)
    return org, problems + check_org(org, doc)


def _definition_problems(doc: Document, org: Org | None) -> tuple[Definition | None, list[Problem]]:
    problems = check_definition_schema(doc)
    if _has_errors(problems):
        return None, problems
    defn = build_definition(doc)
    return defn, problems + check_definition(defn, doc, org)


def _find_org_beside(reads: Iterable[_Read]) -> _Read | None:
    for folder in dict.fromkeys(r.path.parent for r in reads):
        candidate = folder / ORG_FILE
        if candidate.is_file():
            return _read(candidate)
    return None


def _duplicate_versions(defs: Iterable[tuple[Definition, Document]]) -> Iterator[Problem]:
    first: dict[tuple[str, int], Definition] = {}
    for defn, doc in defs:
        seen = first.setdefault((defn.id, defn.version), defn)
        if seen is not defn:
            line, col = doc.where(("version",))
            yield Problem(
                doc.file,
                line,
                col,
                "duplicate-definition",
                f"{defn.key} is also defined in {seen.file}",
                "bump `version` in one of them (each change to a process is a new version)",
            )


def _unknown_granted(org: Org, doc: Document, known: set[str]) -> Iterator[Problem]:
    """Definitions the permission matrix names that are not among `known`."""
    for grant in org.access or ():
        for i, name in enumerate(grant.definitions or ()):
            if name not in known:
                line, col = doc.where((*grant.path, "definitions", i))
                yield Problem(
                    doc.file,
                    line,
                    col,
                    "grant-unknown-definition",
                    f"the permission matrix names the definition `{name}`, which is neither given nor "
                    "in a file beside the org: the grant covers no case of it",
                    did_you_mean(name, sorted(known))
                    or "fix the id, or keep the definition's file beside the org file",
                    "warning",
                )


def _duplicate_org(extra: _Read, chosen: _Read) -> Problem:
    return Problem(
        str(extra.path),
        1,
        1,
        "duplicate-org",
        f"a second org file; {chosen.path} is the one used",
        "validate one org at a time",
    )


class _Beside:
    """Sub-process lookup: a definition given, else one in a file beside the definition naming it (found
    by its `id:` line, read and built once, without its own problems: they are its own file's to report)."""

    def __init__(self, given: Mapping[str, Definition]) -> None:
        self._given = dict(given)
        self._folders: dict[pathlib.Path, dict[str, pathlib.Path]] = {}
        self._built: dict[pathlib.Path, Definition | None] = {}

    def __call__(self, definition_id: str, seen_from: Definition) -> Definition | None:
        if definition_id in self._given:
            return self._given[definition_id]
        folder = pathlib.Path(seen_from.file).parent
        path = self._ids(folder).get(definition_id)
        if path is None:
            return None
        if path not in self._built:
            read = _read(path)
            built = None
            if read.doc is not None and not _has_errors(check_definition_schema(read.doc)):
                built = build_definition(read.doc)
            self._built[path] = built
        return self._built[path]

    def _ids(self, folder: pathlib.Path) -> dict[str, pathlib.Path]:
        found = self._folders.get(folder)
        if found is None:
            found = {}
            if folder.is_dir():
                for path in sorted(folder.iterdir()):
                    if path.suffix not in YAML_SUFFIXES or path.name.endswith(SCENARIO_SUFFIXES):
                        continue
                    try:
                        head = path.read_text(encoding="utf-8")[:4096]
                    except (OSError, UnicodeDecodeError):
                        continue
                    match = _ID_LINE.search(head)
                    if match is not None:
                        found.setdefault(match.group(1), path)
            self._folders[folder] = found
        return found


def subprocess_files(path: pathlib.Path) -> list[pathlib.Path]:
    """The files beside a definition that hold the definitions it runs as sub-processes, and theirs in
    turn (each once): what must be deployed with it for its cases to run."""
    read = _read(path)
    if read.doc is None or _has_errors(check_definition_schema(read.doc)):
        return []
    lookup = _Beside({})
    found: list[pathlib.Path] = []
    todo = [build_definition(read.doc)]
    seen = {todo[0].id}
    while todo:
        here = todo.pop()
        for state in here.states.values():
            sub = state.subprocess
            if sub is None or sub.definition in seen:
                continue
            seen.add(sub.definition)
            child = lookup(sub.definition, here)
            if child is not None:
                found.append(pathlib.Path(child.file))
                todo.append(child)
    return found


_ID_LINE = re.compile(r"^id:\s*['\"]?([a-z][a-z0-9-]*)['\"]?\s*$", re.M)


def validate_paths(paths: Sequence[pathlib.Path]) -> Report:
    """Check files and folders together: every problem of every file, sorted by file, line and column."""
    reads = [_read(p) for p in expand_paths(paths)]
    problems: list[Problem] = [p for r in reads for p in r.problems]
    org_reads = [r for r in reads if _is_org(r)]
    def_reads = [r for r in reads if not _is_org(r)]
    problems += [_duplicate_org(extra, org_reads[0]) for extra in org_reads[1:]]
    org_read = org_reads[0] if org_reads else _find_org_beside(def_reads)
    org: Org | None = None
    if org_read is not None:
        if not org_reads:
            problems += org_read.problems  # found beside the definitions, not yet counted
        if org_read.doc is not None:
            org, found = _org_problems(org_read.doc)
            problems += found
    checked: list[tuple[Definition, Document, bool]] = []
    for r in def_reads:
        if r.doc is None:
            continue
        defn, found = _definition_problems(r.doc, org)
        problems += found
        if defn is not None:
            checked.append((defn, r.doc, _has_errors(found)))
    problems += _duplicate_versions((d, doc) for d, doc, _ in checked)
    if org is not None and org_read is not None and org_read.doc is not None and org.access is not None:
        # The matrix may name any definition given or kept beside the org file.
        known = {d.id for d, _, _ in checked} | set(_Beside({})._ids(org_read.path.parent))
        problems += _unknown_granted(org, org_read.doc, known)
    problems += check_links([(d, doc) for d, doc, _ in checked], _Beside({d.id: d for d, _, _ in checked}))
    sources = {doc.file: doc.text for _, doc, _ in checked}
    if org_read is not None and org_read.doc is not None:
        sources[org_read.doc.file] = org_read.doc.text
    files = [str(r.path) for r in reads]
    if org_read is not None and not org_reads:
        files.append(str(org_read.path))
    return Report(
        definitions=tuple(d for d, _, failed in checked if not failed),
        org=org,
        problems=tuple(sort_problems(shorten(p) for p in problems)),
        sources=sources,
        files=tuple(files),
        org_beside=org_read is not None and not org_reads,
    )


_LONG_NAME = re.compile("`([^`\n]{" + str(LONG_NAME + 1) + ",})`")


def shorten(problem: Problem) -> Problem:
    """The problem with every quoted name longer than LONG_NAME characters cut short: a 10,000-character
    state name is named by its start and its length, not echoed whole in each message."""

    def cut(match: re.Match[str]) -> str:
        name = match.group(1)
        return f"`{name[:LONG_NAME // 2]}…` ({len(name)} characters)"

    message = _LONG_NAME.sub(cut, problem.message)
    hint = _LONG_NAME.sub(cut, problem.hint) if problem.hint else problem.hint
    if message == problem.message and hint == problem.hint:
        return problem
    return replace(problem, message=message, hint=hint)


def load_org_file(path: pathlib.Path) -> Org:
    """The org in `path`; DefinitionError if the file has errors (warnings are allowed)."""
    doc = _read_or_raise(path)
    org, problems = _org_problems(doc)
    if org is None or _has_errors(problems):
        raise DefinitionError(sort_problems(shorten(p) for p in problems))
    return org


def load_definition_file(path: pathlib.Path, org: Org | None = None) -> Definition:
    """The definition in `path`, checked against `org` when given; DefinitionError if it has errors."""
    doc = _read_or_raise(path)
    defn, problems = _definition_problems(doc, org)
    if defn is None or _has_errors(problems):
        raise DefinitionError(sort_problems(shorten(p) for p in problems))
    return defn


def _read_or_raise(path: pathlib.Path) -> Document:
    if not path.is_file():
        raise UsageError(f"{path}: no such file", hint="check the path")
    read = _read(path)
    if read.doc is None:
        raise DefinitionError(read.problems)
    return read.doc
