"""The scenario model: small frozen values built from a checked scenario file, each with its line."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class ExpectedNotice:
    """A notification a step must send: to a role or user, its subject containing some words."""

    to: str
    subject_contains: str | None = None


@dataclass(frozen=True, slots=True)
class Expect:
    """What must be true after a step; None (or absent) means not checked."""

    state: str | None = None
    refused: str | None = None
    data: Mapping[str, Any] | None = None
    assignee_given: bool = False
    assignee: str | None = None
    deadlines: tuple[str, ...] | None = None
    timers_fired: tuple[str, ...] | None = None
    notifications: tuple[ExpectedNotice, ...] | None = None
    child_state: str | None = None
    """The state of the case's newest sub-process case (its child)."""
    child_deadlines: tuple[str, ...] | None = None
    """The deadlines running (or breached) on the case's newest sub-process case."""
    branches: Mapping[str, str] | None = None
    """In a parallel state: branch → the state it is in."""


@dataclass(frozen=True, slots=True)
class Fire:
    """Fire an event as a user."""

    event: str
    actor: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    comment: str | None = None
    child: bool = False
    """Fire it on the case's open sub-process case (its child) instead of the case itself."""


@dataclass(frozen=True, slots=True)
class Advance:
    """Move the clock on: `seconds` of wall time, or of working time by the org's calendar."""

    seconds: int
    working: bool
    text: str
    """As written, for messages: `3h30m` or `working 2h`."""


@dataclass(frozen=True, slots=True)
class Control:
    """An act on the whole case as `actor`: suspend or cancel it (with a reason), or resume it."""

    act: str
    actor: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a scenario: what it does, what is expected after it, and where it was written."""

    number: int
    """1-based; the start is step 0."""
    line: int
    action: Fire | Advance | Control
    expect: Expect = field(default_factory=Expect)

    def describe(self) -> str:
        if isinstance(self.action, Control):
            return f"step {self.number} ({self.action.act} as {self.action.actor})"
        if isinstance(self.action, Fire):
            on = " on the child" if self.action.child else ""
            return f"step {self.number} (fire {self.action.event}{on} as {self.action.actor})"
        return f"step {self.number} (after {self.action.text})"


@dataclass(frozen=True, slots=True)
class Start:
    actor: str
    data: Mapping[str, Any]
    line: int
    expect: Expect = field(default_factory=Expect)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    line: int
    start: Start
    steps: tuple[Step, ...]
    at: datetime
    """When the case starts (aware)."""


@dataclass(frozen=True, slots=True)
class ScenarioFile:
    """A checked scenario file: its scenarios and the definition and org files they run."""

    file: str
    definition_file: Path
    org_file: Path
    definition_id: str
    scenarios: tuple[Scenario, ...]
