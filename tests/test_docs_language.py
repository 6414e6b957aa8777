"""The language reference (docs/language.md) stays true to the language.

- every file in docs/examples/ validates cleanly (no error, no warning) against its org;
- every ```yaml block of the reference that names a file is that file, verbatim (minus its schema line),
  and every ```yaml fragment block is a piece of some example file, so no example can drift from what
  the checker accepts;
- together the examples show every construct of the language at least once;
- the table of checks lists exactly the codes the checker can emit.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sopflow.engine.definition.loader import read_yaml
from sopflow.engine.definition.semantic import ORG_CODES, SEMANTIC_CODES
from sopflow.engine.definition.validate import validate_paths

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "language.md"
EXAMPLES = ROOT / "docs" / "examples"
CHECKER_SOURCES = sorted((ROOT / "engine" / "definition").rglob("*.py"))
SPECIAL_ACTORS = ("$assignee", "$starter")
MAX_FRAGMENTS = 8

FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)
FILE_LINE = re.compile(r"# file: docs/examples/(?P<name>[a-z0-9-]+(?:\.test)?\.yaml)\n")
SCHEMA_LINE = re.compile(
    r"# yaml-language-server: \$schema=\.\./\.\./schemas/(?P<kind>definition|org|scenario)\.schema\.json\n"
)
CODE_ROW = re.compile(r"^\| `(?P<code>[a-z]+(?:-[a-z]+)*)` \|", re.M)
ROW_SEVERITY = re.compile(r"^\| `([a-z]+(?:-[a-z]+)*)` \| (\w+) \|", re.M)
CHECKS_HEADING = "## Checking your files"


def example_files() -> list[Path]:
    """The example definitions and their org; scenario files (*.test.yaml) are tests/test_scenarios.py's."""
    return sorted(p for p in EXAMPLES.glob("*.yaml") if not p.name.endswith(".test.yaml"))


def without_schema_line(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    match = SCHEMA_LINE.match(text)
    assert match, f"{path.name} must begin with its yaml-language-server $schema line"
    return text[match.end() :]


def doc_blocks() -> list[tuple[str, str]]:
    """(info string, body) of every fenced block of the reference."""
    return [(m["info"].strip(), m["body"]) for m in FENCE.finditer(DOC.read_text(encoding="utf-8"))]


def included_examples() -> dict[str, list[str]]:
    """Example file name → the text of each ```yaml block that includes it, after its `# file:` line."""
    shown: dict[str, list[str]] = {}
    for info, body in doc_blocks():
        match = FILE_LINE.match(body)
        if info == "yaml" and match:
            shown.setdefault(match["name"], []).append(body[match.end() :])
    return shown


def checks_section() -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index(CHECKS_HEADING)
    end = text.find("\n## ", start + len(CHECKS_HEADING))
    return text[start : end if end != -1 else len(text)]


def documented_codes() -> list[str]:
    """The codes of the table of checks, in the order listed."""
    return CODE_ROW.findall(checks_section())


# --- (a) the examples validate ----------------------------------------------------------------------


def test_there_are_examples_and_an_org() -> None:
    names = [p.name for p in example_files()]
    assert "org.yaml" in names
    assert len(names) >= 5


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_example_begins_with_the_right_schema_line(path: Path) -> None:
    match = SCHEMA_LINE.match(path.read_text(encoding="utf-8"))
    assert match, f"{path.name}: first line must be the yaml-language-server $schema comment"
    assert match["kind"] == ("org" if path.name == "org.yaml" else "definition")


def test_examples_validate_without_problems() -> None:
    report = validate_paths([EXAMPLES])
    rendered = "\n".join(p.render() for p in report.problems)
    assert report.ok, rendered
    assert not report.problems, f"examples should be exemplary, not even a warning:\n{rendered}"
    assert report.org is not None
    checked = {Path(d.file).name for d in report.definitions}
    assert checked == {p.name for p in example_files() if p.name != "org.yaml"}


# --- (b) what the reference shows is what the files say --------------------------------------------


def test_every_yaml_block_is_an_example_file_or_a_fragment() -> None:
    yaml_blocks = [(info, body) for info, body in doc_blocks() if info.split()[:1] in (["yaml"], ["yml"])]
    assert yaml_blocks, "the reference shows no YAML at all"
    for info, body in yaml_blocks:
        assert info in ("yaml", "yaml fragment"), f"unknown block kind ```{info}"
        if info == "yaml":
            assert FILE_LINE.match(body), f"a ```yaml block must name its file on its first line:\n{body}"


@pytest.mark.parametrize("name", sorted(included_examples()))
def test_included_example_is_verbatim(name: str) -> None:
    path = EXAMPLES / name
    assert path.is_file(), f"the reference includes docs/examples/{name}, which does not exist"
    for shown in included_examples()[name]:
        assert shown == without_schema_line(path), f"docs/language.md's copy of {name} differs from the file"


def test_every_example_file_is_shown() -> None:
    missing = {p.name for p in [*example_files(), *EXAMPLES.glob("*.test.yaml")]} - set(included_examples())
    assert not missing, f"example files the reference never shows: {sorted(missing)}"


def test_fragments_are_pieces_of_examples() -> None:
    texts = [p.read_text(encoding="utf-8") for p in example_files()]
    fragments = [body for info, body in doc_blocks() if info == "yaml fragment"]
    assert len(fragments) <= MAX_FRAGMENTS, "fragments should be few: include whole example files instead"
    for fragment in fragments:
        assert fragment.strip(), "an empty fragment"
        assert any(fragment in text for text in texts), f"this fragment is in no example file:\n{fragment}"


def test_links_within_the_reference_lead_to_headings() -> None:
    text = DOC.read_text(encoding="utf-8")
    headings = re.findall(r"^#{2,4} (.+)$", text, re.M)
    # GitHub's anchors: lower case, punctuation dropped, spaces become hyphens
    anchors = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}
    broken = sorted(set(re.findall(r"\]\(#([^)]+)\)", text)) - anchors)
    assert not broken, f"links to headings that do not exist: {broken}"


# --- (c) every construct appears in an example ------------------------------------------------------


@functools.cache
def definitions() -> list[dict[str, Any]]:
    """The example definitions as plain data, read by the engine's own loader."""
    return [read_yaml(p).data for p in example_files() if p.name != "org.yaml"]


@functools.cache
def org() -> dict[str, Any]:
    data: dict[str, Any] = read_yaml(EXAMPLES / "org.yaml").data
    return data


def states() -> Iterator[tuple[str, dict[str, Any]]]:
    for d in definitions():
        yield from d["states"].items()


def events() -> Iterator[tuple[dict[str, Any], Any]]:
    """(state, event value): the value is one transition or a list of alternatives."""
    for _, state in states():
        for spec in state.get("on", {}).values():
            yield state, spec


def transitions() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for state, spec in events():
        for t in spec if isinstance(spec, list) else [spec]:
            yield state, t


def approvals() -> Iterator[dict[str, Any]]:
    return (s["approval"] for _, s in states() if "approval" in s)


def deadlines() -> Iterator[dict[str, Any]]:
    for d in definitions():
        yield from d.get("deadlines", [])


def rungs() -> Iterator[dict[str, Any]]:
    for d in deadlines():
        yield from d.get("escalate", [])


def schema_nodes(schema: Any) -> Iterator[dict[str, Any]]:
    """Every sub-schema of a JSON Schema (objects only)."""
    if isinstance(schema, dict):
        yield schema
        for value in schema.values():
            yield from schema_nodes(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from schema_nodes(value)


def guards() -> list[str]:
    found = [t["when"] for _, t in transitions() if "when" in t]
    found += [b["when"] for _, s in states() for b in s.get("choice", []) if "when" in b]
    return found


def has_nested_object(data: dict[str, Any]) -> bool:
    props = data.get("properties", {})
    return any(p.get("type") == "object" and p.get("properties") for p in props.values())


def keyed(
    prefix: str, items: Callable[[], Iterable[dict[str, Any]]], keys: Iterable[str]
) -> dict[str, Callable[[], bool]]:
    """One check per key: some item (of a fresh `items()`) has it."""

    def has(key: str) -> Callable[[], bool]:
        return lambda: any(key in item for item in items())

    return {f"{prefix} {key}": has(key) for key in keys}


def guard_uses(word: str) -> Callable[[], bool]:
    return lambda: any(word in g for g in guards())


def all_states() -> Iterator[dict[str, Any]]:
    return (s for _, s in states())


def all_transitions() -> Iterator[dict[str, Any]]:
    return (t for _, t in transitions())


def branch_states() -> Iterator[dict[str, Any]]:
    """The states of every branch (written, or the template of one task per item) of the examples."""
    for state in all_states():
        parallel = state.get("parallel", {})
        written = list(parallel.get("branches", {}).values())
        for branch in written + ([parallel["branch"]] if "branch" in parallel else []):
            yield from branch["states"].values()


def assignments() -> Iterator[dict[str, Any]]:
    return (s["assign"] for s in all_states() if "assign" in s)


def assumptions() -> Iterator[Any]:
    for d in definitions():
        yield from d.get("assumptions", ())


def bilingual_assumption() -> bool:
    return any(isinstance(a, dict) and {"zh", "en"} <= set(a) for a in assumptions())


def roles() -> Iterator[dict[str, Any]]:
    return iter(org()["roles"].values())


def calendar() -> dict[str, Any]:
    cal: dict[str, Any] = org().get("calendar", {})
    return cal


def alternatives_with_guards() -> bool:
    lists = [spec for _, spec in events() if isinstance(spec, list)]
    return any(len(spec) >= 2 and any("when" in t for t in spec) for spec in lists)


def choice_ends_with_else() -> bool:
    choices = [s["choice"] for s in all_states() if "choice" in s]
    return any(len(c) >= 2 and set(c[-1]) == {"else"} for c in choices)


def until_list() -> bool:
    return any(isinstance(d["until"], list) and len(d["until"]) >= 2 for d in deadlines())


def compound_duration() -> bool:
    return any(re.fullmatch(r"(\d+[wdhms]){2,}", r.get("after", "")) for r in rungs())


CONSTRUCTS: dict[str, Callable[[], bool]] = {
    **keyed("top-level", definitions, (
        "id", "version", "title", "description", "source", "assumptions", "data", "initial", "deadlines")),
    "bilingual assumption": bilingual_assumption,
    "data required fields": lambda: any(d.get("data", {}).get("required") for d in definitions()),
    "data enum": lambda: any("enum" in n for d in definitions() for n in schema_nodes(d.get("data"))),
    "data nested object": lambda: any(has_nested_object(d.get("data", {})) for d in definitions()),
    **keyed("state", all_states, (
        "owner", "output", "instructions", "source", "on", "choice", "approval", "assign", "timeout")),
    "final state": lambda: any(s.get("final") is True for s in all_states()),
    "by a role": lambda: any(set(t.get("by", [])) - set(SPECIAL_ACTORS) for t in all_transitions()),
    "by $assignee": lambda: any("$assignee" in t.get("by", []) for t in all_transitions()),
    "by $starter": lambda: any("$starter" in t.get("by", []) for t in all_transitions()),
    "by defaults to the owner": lambda: any("by" not in t and "owner" in s for s, t in transitions()),
    **keyed("transition", all_transitions, ("title", "when", "explain", "payload", "set", "copy", "source")),
    "payload with a required comment": lambda: any(
        "comment" in t.get("payload", {}).get("required", []) for t in all_transitions()),
    "payload with an enum category": lambda: any(
        "enum" in t.get("payload", {}).get("properties", {}).get("category", {}) for t in all_transitions()),
    "guarded alternatives for one event": alternatives_with_guards,
    "choice with else last": choice_ends_with_else,
    **keyed("approval", approvals, ("all_of", "any_of", "quorum", "veto", "submitter_may_approve")),
    "approval quorum at_least": lambda: any("at_least" in a.get("quorum", {}) for a in approvals()),
    "approval veto false": lambda: any(a.get("veto") is False for a in approvals()),
    "approval submitter may approve": lambda: any(a.get("submitter_may_approve") for a in approvals()),
    **keyed("assign", assignments, ("from_data", "least_loaded", "claim")),
    **keyed("assign", assignments, ("fired_by", "round_robin", "not_by")),
    **keyed("control", lambda: (d["control"] for d in definitions() if "control" in d),
            ("cancel", "suspend")),
    "timeout after and fire": lambda: any(
        set(s.get("timeout", ())) == {"after", "fire"} for s in all_states()
    ),
    "deadline until list": until_list,
    "deadline until one state": lambda: any(isinstance(d["until"], str) for d in deadlines()),
    "deadline calendar working": lambda: any(d.get("calendar") == "working" for d in deadlines()),
    **keyed("deadline", deadlines, ("title", "source", "escalate")),
    **keyed("escalate", rungs, ("notify", "reassign", "fire", "after")),
    "escalation ladder of several rungs": lambda: any(len(d.get("escalate", [])) >= 3 for d in deadlines()),
    "escalation notifies a user": lambda: any(r.get("notify") in org()["users"] for r in rungs()),
    "deadline restart on_reentry": lambda: any(d.get("restart") == "on_reentry" for d in deadlines()),
    "escalation from start": lambda: any(r.get("from") == "start" for r in rungs()),
    "timeout notify": lambda: any("notify" in s.get("timeout", {}) for s in all_states()),
    "schedule cron": lambda: any("cron" in s for d in definitions() for s in d.get("schedules", {}).values()),
    **{f"schedule {key}": (lambda key=key: any(  # type: ignore[misc]
        key in s for d in definitions() for s in d.get("schedules", {}).values()))
       for key in ("title", "working_day", "data")},
    "a compound duration": compound_duration,
    **{f"guard uses {word}": guard_uses(word) for word in (
        " in ", "has(", "size(", ".startsWith(", ".endsWith(", ".contains(", ".matches(", ".all(", ".exists(",
        "actor.", "payload.", "data.", "&&", "||")},
    **keyed("org", lambda: [org()], ("departments", "roles", "users", "calendar")),
    **keyed("org role", roles, ("department", "manager", "administrator", "source", "wip_limit")),
    "org role administrator true": lambda: any(r.get("administrator") is True for r in roles()),
    "org bilingual role titles": lambda: all({"zh", "en"} <= set(r["title"]) for r in roles()),
    "org users with several roles": lambda: any(len(u["roles"]) >= 2 for u in org()["users"].values()),
    **keyed("org calendar", lambda: [calendar()], ("timezone", "working_days", "working_hours", "holidays",
                                                    "extra_working_days")),
    # the second edition: who may act and what a step computes
    **keyed("top-level", definitions, ("start",)),
    **keyed("measures", lambda: (d["measures"] for d in definitions() if "measures" in d), (
        "errors", "complaints", "satisfaction", "threshold")),
    **keyed("start", lambda: (d["start"] for d in definitions() if "start" in d), ("by", "when", "explain")),
    **keyed("transition", all_transitions, ("not_by", "compute")),
    **keyed("approval", approvals, ("not_by", "payload", "copy")),
    "not_by $starter": lambda: any("$starter" in t.get("not_by", []) for t in all_transitions()),
    "not_by fired:EVENT": lambda: any(
        e.startswith("fired:") for t in all_transitions() for e in t.get("not_by", [])),
    "by $system (clock only)": lambda: any(t.get("by") == ["$system"] for t in all_transitions()),
    "data user field bound to a role": lambda: any(
        n.get("format") == "user" and "role" in n
        for d in definitions() for n in schema_nodes(d.get("data"))),
    "guard uses case.": guard_uses("case."),
    # concurrency: who does a branch's work
    **keyed("branch assign", lambda: (s["assign"] for s in branch_states() if "assign" in s), (
        "from_data", "least_loaded", "claim")),
    "parallel remaining finish": lambda: any(
        s.get("parallel", {}).get("remaining") == "finish" for s in all_states()),
    "deadline on each item": lambda: any(d.get("branch") == "each" for d in deadlines()),
}  # fmt: skip


@pytest.mark.parametrize("construct", sorted(CONSTRUCTS))
def test_construct_appears_in_an_example(construct: str) -> None:
    assert CONSTRUCTS[construct](), f"no example in docs/examples/ shows: {construct}"


def test_every_refusing_guard_explains_itself() -> None:
    """A guard that can refuse (no later alternative without `when` catches the event) has an `explain`."""
    missing = []
    for _, spec in events():
        alternatives = spec if isinstance(spec, list) else [spec]
        for i, t in enumerate(alternatives):
            caught = any("when" not in later for later in alternatives[i + 1 :])
            if "when" in t and "explain" not in t and not caught:
                missing.append(t["when"])
    assert not missing, f"examples should pair every refusing `when` with an `explain`: {missing}"


# --- (d) the table of checks matches the checker ----------------------------------------------------

# The first string literal passed to a call that makes a finding is its code: Problem(file, line, col, CODE),
# _error(file, where, CODE), self.fail(where, CODE), ctx.problem(path, CODE), ExpressionIssue(CODE). Nested
# brackets such as `(1, 1)` or `(*s.path, "on")` are skipped; `def` lines (default values) are not calls.
EMITTED = re.compile(
    r"(?<!def )\b(?:Problem|_error|fail|problem|_problem|ExpressionIssue)\("
    r'(?:[^"()]|\([^()]*\))*?"([a-z]+(?:-[a-z]+)*)"'
)
BAD_EXAMPLES = ROOT / "tests" / "bad"


def checker_source() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in CHECKER_SOURCES)


def emitted_codes() -> set[str]:
    return set(EMITTED.findall(checker_source()))


def documented_rows() -> dict[str, str]:
    """Code → severity, from the table of checks."""
    return dict(ROW_SEVERITY.findall(checks_section()))


def test_checks_table_lists_codes_once() -> None:
    codes = documented_codes()
    assert len(codes) >= 40
    assert len(codes) == len(set(codes)), "a code is listed twice"
    assert set(documented_rows().values()) <= {"error", "warning"}
    assert set(documented_rows()) == set(codes)


@pytest.mark.parametrize("code", documented_codes())
def test_documented_code_is_emitted_by_the_checker(code: str) -> None:
    assert f'"{code}"' in checker_source(), f"`{code}` is in the table but no checker module emits it"


def test_every_code_the_checker_emits_is_documented() -> None:
    emitted = emitted_codes() | set(SEMANTIC_CODES) | set(ORG_CODES)
    assert {"yaml-syntax", "unknown-key", "unknown-state", "bad-guard", "duplicate-definition"} <= emitted
    missing = emitted - set(documented_codes())
    assert not missing, f"codes the checker emits that the table of checks leaves out: {sorted(missing)}"


@pytest.mark.parametrize("code", [c for c in documented_codes() if (BAD_EXAMPLES / f"{c}-1.yaml").is_file()])
def test_documented_severity_is_the_checkers(code: str) -> None:
    """The checker's own bad examples (tests/bad/CODE-1.yaml) report the code with the documented severity."""
    bad = BAD_EXAMPLES / f"{code}-1.yaml"
    is_org = "users:" in bad.read_text(encoding="utf-8")
    report = validate_paths([bad] if is_org else [bad, BAD_EXAMPLES / "org.yaml"])
    severities = {p.severity for p in report.problems if p.code == code}
    assert severities == {documented_rows()[code]}
