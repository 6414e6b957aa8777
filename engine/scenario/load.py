"""Reading a scenario file: the hardened YAML loader, the shipped JSON Schema (schemas/scenario.schema.json),
then the meaning against its definition and org, so that a mistake in a scenario (an unknown user, event,
state, deadline or timer; a bad duration or time) is reported at `file:line:col` with a hint, before
anything runs.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sopflow.engine.definition.build import parse_duration
from sopflow.engine.definition.loader import Document, read_yaml
from sopflow.engine.definition.model import Definition, Org, State
from sopflow.engine.definition.model import Path as NodePath
from sopflow.engine.definition.schema import check_scenario_schema
from sopflow.engine.definition.validate import (
    ORG_FILE,
    SCENARIO_SUFFIXES,
    load_definition_file,
    load_org_file,
)
from sopflow.engine.errors import DefinitionError, Problem, UsageError
from sopflow.engine.scenario.model import (
    Advance,
    Control,
    Expect,
    ExpectedNotice,
    Fire,
    Scenario,
    ScenarioFile,
    Start,
    Step,
)
from sopflow.engine.step import CLAIM

CONTROL_ACTS = ("suspend", "resume", "cancel")
"""Scenario steps that act on the whole case, each with its reason."""
MAX_LISTED = 12
"""A hint lists the names allowed only when they are few; more, and it says where to find them."""
DEFAULT_START = (2026, 3, 2, 9, 0)
"""Monday 2 March 2026, 09:00 in the org calendar's time zone: a working day, at the start of work."""


def scenario_files(paths: Sequence[Path]) -> list[Path]:
    """The scenario files to run: each *.test.yaml of each folder given (in name order), each scenario
    file given, and for a definition file given, the scenario file beside it."""
    if not paths:
        raise UsageError("no file or folder given", hint="give scenario files or a folder of them")
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.name.endswith(SCENARIO_SUFFIXES) and p.is_file())
            if not inside:
                raise UsageError(
                    f"{path}: the folder holds no scenario file (*.test.yaml)",
                    hint="write ID.test.yaml beside ID.yaml (docs/language.md, section Scenarios)",
                )
            found += inside
        elif path.is_file() and path.name.endswith(SCENARIO_SUFFIXES):
            found.append(path)
        elif path.is_file():
            beside = path.with_name(f"{path.name.rsplit('.', 1)[0]}.test.yaml")
            if not beside.is_file():
                raise UsageError(
                    f"{path}: no scenario file beside it ({beside.name})",
                    hint=f"write {beside} (docs/language.md, section Scenarios)",
                )
            found.append(beside)
        else:
            raise UsageError(f"{path}: no such file or folder", hint="check the path")
    return list(dict.fromkeys(found))


def load_scenario_file(path: Path) -> tuple[ScenarioFile, Definition, Org]:
    """The checked scenarios of `path` with the definition and org they run; DefinitionError listing every
    problem of the file (or of its definition or org) otherwise."""
    doc = read_yaml(path)
    problems = check_scenario_schema(doc)
    if problems:
        raise DefinitionError(problems)
    definition_file, org_file = _files(doc, path)
    org = load_org_file(org_file)
    definition = load_definition_file(definition_file, org)
    checker = _Checker(doc, definition, org)
    scenarios = tuple(checker.scenario(i, raw) for i, raw in enumerate(doc.data["scenarios"]))
    if checker.problems:
        raise DefinitionError(sorted(checker.problems, key=lambda p: (p.line, p.col)))
    return (
        ScenarioFile(doc.file, definition_file, org_file, definition.id, scenarios),
        definition,
        org,
    )


def _files(doc: Document, path: Path) -> tuple[Path, Path]:
    """The definition and org files of a scenario file, as it names them or as they lie beside it."""
    data = doc.data
    named = data.get("definition")
    if named is None:
        stem = path.name
        for suffix in SCENARIO_SUFFIXES:
            stem = stem.removesuffix(suffix)
        definition_file = path.parent / f"{stem}.yaml"
        where: NodePath = ()
    else:
        relative = Path(named)
        definition_file = path.parent / (
            relative if relative.suffix in (".yaml", ".yml") else f"{named}.yaml"
        )
        where = ("definition",)
    if not definition_file.is_file():
        line, col = doc.where(where)
        raise DefinitionError(
            [
                Problem(
                    doc.file,
                    line,
                    col,
                    "unknown-definition",
                    f"no definition file `{definition_file}` for these scenarios",
                    "name the definition with `definition: ID` (ID.yaml beside this file) or name this "
                    "file ID.test.yaml beside ID.yaml",
                )
            ]
        )
    org_named = data.get("org")
    org_file = path.parent / org_named if org_named is not None else definition_file.parent / ORG_FILE
    if not org_file.is_file():
        line, col = doc.where(("org",) if org_named is not None else ())
        raise DefinitionError(
            [
                Problem(
                    doc.file,
                    line,
                    col,
                    "unknown-org",
                    f"no org file `{org_file}`",
                    "keep org.yaml beside the definition or name it with `org: PATH` (relative to this file)",
                )
            ]
        )
    return definition_file, org_file


class _Checker:
    """Builds the model of one scenario file while collecting every problem of meaning in it."""

    def __init__(self, doc: Document, definition: Definition, org: Org) -> None:
        self.doc = doc
        self.definition = definition
        self.org = org
        self.problems: list[Problem] = []
        self.zone = ZoneInfo(org.calendar.timezone)
        events: set[str] = set()
        self.item_events: set[str] = set()
        for state in definition.states.values():
            events.update(state.events)
            for branch in state.parallel.branches.values() if state.parallel is not None else ():
                for inner in branch.states.values():
                    events.update(_branch_events(inner))
                    events.update(f"{branch.name}.{e}" for e in _branch_events(inner))
            template = state.parallel.template if state.parallel is not None else None
            for inner in template.states.values() if template is not None else ():
                # One task per item: its branches are named by the case's data, known only when it runs.
                events.update(_branch_events(inner))
                self.item_events.update(_branch_events(inner))
            if state.assign is not None and state.assign.kind == "claim":
                events.add(CLAIM)
        self.events = sorted(events)
        timers: list[str] = []
        for d in definition.deadlines:
            timers += [d.name, *(f"{d.name}/{n}" for n in range(1, len(d.escalate) + 1))]
        timers += [f"timeout:{s.name}" for s in definition.states.values() if s.timeout is not None]
        self.timers = timers

    def fail(self, path: NodePath, code: str, message: str, hint: str | None = None) -> None:
        line, col = self.doc.where(path)
        self.problems.append(Problem(self.doc.file, line, col, code, message, hint))

    def known(self, path: NodePath, value: str, allowed: Iterable[str], code: str, noun: str) -> None:
        options = list(allowed)
        if value in options:
            return
        close = difflib.get_close_matches(value, options, n=1, cutoff=0.6)
        if close:
            hint = f"did you mean `{close[0]}`?"
        elif len(options) > MAX_LISTED:
            hint = f"the {noun}s are listed in {self._where(code)}"
        else:
            hint = "known: " + ", ".join(f"`{o}`" for o in options)
        self.fail(path, code, f"{noun} `{value}` is not in {self._where(code)}", hint)

    def _where(self, code: str) -> str:
        if code in ("unknown-user", "unknown-recipient"):
            return f"the org ({self.org.file})"
        return f"{self.definition.key} ({self.definition.file})"

    def scenario(self, index: int, raw: Mapping[str, Any]) -> Scenario:
        base: NodePath = ("scenarios", index)
        start_raw = raw["start"]
        self.known((*base, "start", "as"), start_raw["as"], self.org.users, "unknown-user", "user")
        start = Start(
            actor=start_raw["as"],
            data=dict(start_raw.get("data") or {}),
            line=self.doc.where((*base, "start"))[0],
            expect=self.expect((*base, "start", "expect"), start_raw.get("expect")),
        )
        steps = tuple(self.step((*base, "steps", n), n + 1, s) for n, s in enumerate(raw.get("steps") or ()))
        if start.expect.refused is not None and steps:
            self.fail(
                (*base, "steps"),
                "after-a-refused-start",
                "steps follow a start that is expected to be refused: there is no case for them",
                "end the scenario at the refused start, or start it with data that is accepted",
            )
        return Scenario(
            name=raw["name"],
            line=self.doc.where(base)[0],
            start=start,
            steps=steps,
            at=self.moment((*base, "at"), raw.get("at")),
        )

    def moment(self, path: NodePath, text: str | None) -> datetime:
        if text is None:
            return datetime(*DEFAULT_START, tzinfo=self.zone)
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            self.fail(path, "bad-time", f"`{text}` is not a date and time", "write it like 2026-03-06 17:00")
            return datetime(*DEFAULT_START, tzinfo=self.zone)
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=self.zone)

    def step(self, path: NodePath, number: int, raw: Mapping[str, Any]) -> Step:
        action: Fire | Advance | Control
        act = next((a for a in CONTROL_ACTS if a in raw), None)
        if act is not None:
            if "as" in raw:
                self.known((*path, "as"), raw["as"], self.org.users, "unknown-user", "user")
            else:
                self.fail(
                    path,
                    "missing-key",
                    f"missing key `as` in step {number}: who does the {act}?",
                    "write the user id, e.g. `as: li.na`",
                )
            reason = raw[act]
            action = Control(act, raw.get("as", ""), reason if isinstance(reason, str) else None)
        elif "fire" in raw:
            if not raw.get("child"):  # a child's events are its own definition's, checked when fired
                fired = str(raw["fire"])
                if fired.rpartition(".")[2] not in self.item_events:
                    self.known((*path, "fire"), fired, self.events, "unknown-event", "event")
            if "as" in raw:
                self.known((*path, "as"), raw["as"], self.org.users, "unknown-user", "user")
            else:
                self.fail(
                    path,
                    "missing-key",
                    f"missing key `as` in step {number}: who fires `{raw['fire']}`?",
                    "write the user id, e.g. `as: li.na`",
                )
            action = Fire(
                raw["fire"],
                raw.get("as", ""),
                dict(raw.get("data") or {}),
                raw.get("comment"),
                child=raw.get("child") is True,
            )
        else:
            action = self.advance((*path, "after"), raw["after"])
            for key in ("as", "data", "comment", "child"):
                if key in raw:
                    self.fail((*path, key), "not-for-the-clock", f"`{key}` belongs to a `fire` step")
        expect = self.expect((*path, "expect"), raw.get("expect"))
        if isinstance(action, Advance) and expect.refused is not None:
            self.fail((*path, "expect", "refused"), "not-for-the-clock", "the clock cannot be refused")
        return Step(number, self.doc.where(path)[0], action, expect)

    def advance(self, path: NodePath, raw: str | Mapping[str, str]) -> Advance:
        working = isinstance(raw, Mapping)
        text = raw["working"] if isinstance(raw, Mapping) else raw
        seconds = parse_duration(text)
        if seconds is None:
            where = (*path, "working") if working else path
            self.fail(where, "bad-duration", f"`{text}` is not a duration", "write it like 4h, 30m or 3h30m")
            seconds = 0
        return Advance(seconds, working, f"working {text}" if working else text)

    def expect(self, path: NodePath, raw: Mapping[str, Any] | None) -> Expect:
        if raw is None:
            return Expect()
        if "state" in raw:
            self.known((*path, "state"), raw["state"], self.definition.states, "unknown-state", "state")
        for n, name in enumerate(raw.get("deadlines", ())):
            names = [d.name for d in self.definition.deadlines]
            # A per-item deadline runs as `NAME@ITEM`, the item known only when the case runs.
            base = name.split("@", 1)[0] if isinstance(name, str) else name
            self.known((*path, "deadlines", n), base, names, "unknown-timer", "deadline")
        for n, name in enumerate(raw.get("timers_fired", ())):
            # A per-item deadline's timers are `NAME@ITEM` and `NAME@ITEM/RUNG`.
            base = re.sub(r"@[^/]*", "", name) if isinstance(name, str) else name
            self.known((*path, "timers_fired", n), base, self.timers, "unknown-timer", "timer")
        recipients = [*self.org.roles, *self.org.users]
        notices = None
        if "notifications" in raw:
            notices = tuple(ExpectedNotice(n["to"], n.get("subject_contains")) for n in raw["notifications"])
            for n, notice in enumerate(notices):
                where = (*path, "notifications", n, "to")
                self.known(where, notice.to, recipients, "unknown-recipient", "role or user")
        assignee = raw.get("assignee")
        if assignee is not None:
            self.known((*path, "assignee"), assignee, self.org.users, "unknown-user", "user")
        return Expect(
            state=raw.get("state"),
            refused=raw.get("refused"),
            data=raw.get("data"),
            assignee_given="assignee" in raw,
            assignee=assignee,
            deadlines=tuple(raw["deadlines"]) if "deadlines" in raw else None,
            timers_fired=tuple(raw["timers_fired"]) if "timers_fired" in raw else None,
            notifications=notices,
            child_state=raw.get("child_state"),
            child_deadlines=tuple(raw["child_deadlines"]) if "child_deadlines" in raw else None,
            branches=dict(raw["branches"]) if "branches" in raw else None,
        )


def _branch_events(state: State) -> tuple[str, ...]:
    """The events of a branch state: those written, and `claim` when members of a role claim it."""
    claimed = state.assign is not None and state.assign.kind == "claim"
    return (*state.events, CLAIM) if claimed else state.events
