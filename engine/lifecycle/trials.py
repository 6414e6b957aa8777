"""Trials and adoption: which version of a definition a new case starts on.

Without either, a case starts on the newest deployed version. A trial (`trial_start`) splits new cases
between several versions by weight; the split is decided by a hash of the start's idempotency key, so a
retried start (the same key) lands on the version it landed on the first time, whatever else starts in
between. `trial_stop` ends the trial (back to the newest version); `adopt` names the version every new case
starts on from then on, and ends a running trial. Each act is an administrator's or the process owner's
(`engine.lifecycle.owner`), logged with who did it in which role; a refusal is logged too.

A case started by a trial records its version on the case (as every case does) and the trial in its start
record's detail: the split and the bucket its key fell in.
"""

from __future__ import annotations

import hashlib
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sopflow.engine.errors import Conflict, InvalidData, NotFound, NotPermitted, UsageError
from sopflow.engine.lifecycle.owner import decide_owner
from sopflow.engine.store import lifecycle as store_lifecycle
from sopflow.engine.store.lifecycle import ActionRow

if TYPE_CHECKING:
    from sopflow.engine.runtime import Engine

TRIAL_START = "trial_start"
TRIAL_STOP = "trial_stop"
ADOPT = "adopt"
MIGRATE = "migrate"


@dataclass(frozen=True, slots=True)
class LifecycleAct:
    """One act on a definition's versions, as the log keeps it."""

    definition_id: str
    action: str
    versions: Mapping[str, Any]
    actor: str
    role: str | None
    accepted: bool
    reason: str | None
    at: datetime
    detail: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "definition": self.definition_id,
            "action": self.action,
            "versions": dict(self.versions),
            "actor": self.actor,
            "role": self.role,
            "outcome": "accepted" if self.accepted else "refused",
            "reason": self.reason,
            "at": self.at.isoformat(),
            "detail": dict(self.detail),
        }


@dataclass(frozen=True, slots=True)
class Policy:
    """Which version new cases of a definition start on now: a trial's split, an adopted version, or
    (neither) the newest deployed version."""

    definition_id: str
    split: Mapping[int, int] | None = None
    adopted: int | None = None
    since: datetime | None = None
    by: str | None = None


@dataclass(frozen=True, slots=True)
class VersionFigures:
    """One version's cases in a trial: how many started, how many closed, the median cycle time of those
    closed (seconds; None when none closed yet)."""

    version: int
    weight: int
    started: int
    closed: int
    median_cycle_seconds: float | None


@dataclass(frozen=True, slots=True)
class TrialStatus:
    policy: Policy
    versions: tuple[VersionFigures, ...]
    comparison: Any = None
    """The insight engine's comparison of the versions, when it offers one (`engine.insight`)."""


def parse_split(text: str) -> dict[int, int]:
    """`1=50,2=50` → {1: 50, 2: 50}; UsageError (exit 2) naming the bad part or a version named twice."""
    split: dict[int, int] = {}
    for part in (p.strip() for p in text.split(",")):
        version, sep, weight = part.partition("=")
        if not sep or not version.strip().isdigit() or not weight.strip().isdigit():
            raise UsageError(
                f"`{part}` is not VERSION=WEIGHT (a weight is a whole number, 0 or more)",
                hint="give the split as --versions 1=50,2=50",
            )
        if int(version) in split:
            raise UsageError(
                f"--versions names version {int(version)} twice", hint="name each version once: 1=50,2=50"
            )
        split[int(version)] = int(weight)
    return split


def bucket(definition_id: str, key: str, total: int) -> int:
    """Where a start's key falls in a split of `total`: a stable hash, the same on every host."""
    digest = hashlib.sha256(f"{definition_id}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % total


def pick(definition_id: str, key: str, split: Mapping[int, int]) -> tuple[int, int]:
    """The version a start with `key` lands on under `split`, and its bucket."""
    total = sum(split.values())
    where = bucket(definition_id, key, total)
    edge = 0
    for version in sorted(split):
        edge += split[version]
        if where < edge:
            return version, where
    raise AssertionError("a bucket is below the split's total")


def policy(engine: Engine, definition_id: str) -> Policy:
    row = store_lifecycle.policy(engine.store, definition_id)
    return _policy(definition_id, row)


def _policy(definition_id: str, row: ActionRow | None) -> Policy:
    if row is None or row.action == TRIAL_STOP:
        return Policy(
            definition_id, since=None if row is None else row.at, by=None if row is None else row.actor
        )
    versions = {int(v): int(w) for v, w in row.versions.items()}
    if row.action == TRIAL_START:
        return Policy(definition_id, split=versions, since=row.at, by=row.actor)
    return Policy(definition_id, adopted=next(iter(versions)), since=row.at, by=row.actor)


def version_for(engine: Engine, definition_id: str, key: str) -> tuple[int | None, dict[str, Any] | None]:
    """The version a start of `definition_id` under `key` lands on (None: the newest) and, in a trial,
    what its start record keeps of it."""
    found = policy(engine, definition_id)
    if found.adopted is not None:
        return found.adopted, None
    if found.split is None:
        return None, None
    version, where = pick(definition_id, key, found.split)
    split = {str(v): w for v, w in sorted(found.split.items())}
    return version, {"versions": split, "bucket": where}


def _act(
    engine: Engine,
    definition_id: str,
    action: str,
    versions: Mapping[int, int],
    actor: str,
    check: Any = None,
) -> LifecycleAct:
    """Decide who may, check, and log one act (a refusal for want of a role is logged, then raised)."""
    definition = engine.definition(definition_id)
    now = engine.clock()
    org = engine.org()
    person = engine.actor(actor)
    shown = {str(v): w for v, w in sorted(versions.items())}
    verb = {TRIAL_START: "start a trial of", TRIAL_STOP: "stop the trial of", ADOPT: "adopt a version of"}
    try:
        role, _behalf = decide_owner(definition, org, person, verb.get(action, "migrate cases of"))
    except NotPermitted as refused:
        store_lifecycle.log_action(
            engine.store, definition_id, action, shown, actor=person.id, role=None, accepted=False,
            reason=f"{refused.kind}: {refused.message}", detail={}, at=now,
        )  # fmt: skip
        raise
    if check is not None:
        check()
    row = store_lifecycle.log_action(
        engine.store, definition_id, action, shown, actor=person.id, role=role, accepted=True, reason=None,
        detail={}, at=now,
    )  # fmt: skip
    return _as_act(row)


def _deployed(engine: Engine, definition_id: str, versions: Mapping[int, int]) -> None:
    known = {v for d, v in engine.store.definition_keys() if d == definition_id}
    for version in sorted(versions):
        if version not in known:
            raise NotFound(
                f"definition `{definition_id}@{version}` is not deployed",
                hint=f"deployed versions: {', '.join(str(v) for v in sorted(known)) or 'none'}",
            )


def start(engine: Engine, definition_id: str, split: Mapping[int, int], *, actor: str) -> LifecycleAct:
    """Start a trial: new cases split between `split`'s versions by weight (see the module)."""
    if len(split) < 2 or any(w <= 0 for w in split.values()):
        raise InvalidData(
            "a trial splits new cases between two or more versions, each with a weight above 0",
            hint="e.g. --versions 1=50,2=50",
        )
    _deployed(engine, definition_id, split)

    def check() -> None:
        running = policy(engine, definition_id)
        if running.split is not None:
            shown = ", ".join(f"{v}={w}" for v, w in sorted(running.split.items()))
            raise Conflict(
                f"a trial of {definition_id} runs already ({shown}, since {running.since:%Y-%m-%d %H:%M})",
                hint=f"stop it first: sopflow trial stop {definition_id}",
            )

    return _act(engine, definition_id, TRIAL_START, split, actor, check)


def stop(engine: Engine, definition_id: str, *, actor: str) -> LifecycleAct:
    """Stop the running trial: new cases start on the newest version again (or adopt one)."""

    def check() -> None:
        if policy(engine, definition_id).split is None:
            raise Conflict(f"no trial of {definition_id} runs", hint=f"sopflow trial status {definition_id}")

    return _act(engine, definition_id, TRIAL_STOP, {}, actor, check)


def adopt(engine: Engine, definition_id: str, version: int, *, actor: str) -> LifecycleAct:
    """Adopt `version`: every new case starts on it from now on; a running trial ends."""
    _deployed(engine, definition_id, {version: 1})
    return _act(engine, definition_id, ADOPT, {version: 100}, actor)


def status(engine: Engine, definition_id: str, *, viewer: str | None = None) -> TrialStatus:
    """The running (or last) trial: per version, the cases its split started (from its start to its stop,
    not those started with a version named), closed, and their median cycle time, over the cases `viewer`
    may view; and the insight engine's comparison over the same time, when it has one."""
    from sopflow.engine.insight.report import figures_visible

    engine.definition(definition_id)
    visible = figures_visible(engine, viewer, definition_id)
    rows = [r for r in store_lifecycle.actions(engine.store, definition_id, accepted_only=True)]
    trial = next((r for r in reversed(rows) if r.action == TRIAL_START), None)
    current = _policy(definition_id, next((r for r in reversed(rows) if r.action != MIGRATE), None))
    if trial is None:
        return TrialStatus(current, ())
    split = {int(v): int(w) for v, w in trial.versions.items()}
    # The trial ends with the next trial act or adoption (a stop, an adoption, another trial).
    ended = next((r.at for r in rows if r.id > trial.id and r.action != MIGRATE), None)
    counts = store_lifecycle.version_counts(
        engine.store, definition_id, trial.at, visible, until=ended, trial_only=True
    )
    cycles = store_lifecycle.cycle_times(
        engine.store, definition_id, trial.at, visible, until=ended, trial_only=True
    )
    figures = tuple(
        VersionFigures(
            v,
            split[v],
            counts.get(v, 0),
            len(cycles.get(v, [])),
            statistics.median(cycles[v]) if cycles.get(v) else None,
        )
        for v in sorted(split)
    )
    comparison = _comparison(engine, definition_id, sorted(split), trial.at, viewer, ended)
    return TrialStatus(current, figures, comparison)


def _comparison(
    engine: Engine,
    definition_id: str,
    versions: list[int],
    since: datetime,
    viewer: str | None = None,
    until: datetime | None = None,
) -> Any:
    """The insight engine's comparison (`engine.insight.compare`) of the first two versions from the
    trial's start to its end; None where this build has no insight engine."""
    import importlib

    try:
        insight_compare = importlib.import_module("sopflow.engine.insight.compare")
    except ImportError:
        return None
    return insight_compare.compare(
        engine, definition_id, versions[0], versions[1], since=since, until=until, viewer=viewer
    )


def log(engine: Engine, definition_id: str | None = None) -> list[LifecycleAct]:
    """Every act on definitions' versions (of one when given), accepted and refused, oldest first."""
    return [_as_act(r) for r in store_lifecycle.actions(engine.store, definition_id)]


def _as_act(row: ActionRow) -> LifecycleAct:
    return LifecycleAct(
        row.definition_id,
        row.action,
        row.versions,
        row.actor,
        row.role,
        row.outcome == "accepted",
        row.reason,
        row.at,
        row.detail,
    )
