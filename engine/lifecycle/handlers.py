"""Built-in handlers of automatic states for a process that revises other processes (the seed SOP-revision
process: plan, do — trial, check — compare, act — adopt). Every engine has them, under these names:

- `sopflow.trial_start`: start a 50/50 trial of `data.definition` between `data.sop_version` and
  `data.revised_version`;
- `sopflow.trial_compare`: end that trial and compare the two versions over it, answering `verdict` (the
  insight engine's verdict when it offers one, else the counts and median cycle times per version) and the
  figures `old_cases`, `new_cases`, `old_median_hours`, `new_median_hours`;
- `sopflow.adopt`: adopt `data.adopted_version` of `data.definition`.

Each acts as the person whose step moved the case into the automatic state (its submitter), so the act is
theirs, audited and refused like any other (an administrator or the process owner of the definition
revised). Each is idempotent, as a handler must be: called again with the same key, a trial already
running with the same split, a trial already ended, or a version already adopted is the work done.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sopflow.engine.automatic import AutomaticCall, Handler
from sopflow.engine.errors import InvalidData
from sopflow.engine.lifecycle import trials

if TYPE_CHECKING:
    from sopflow.engine.runtime import Engine

TRIAL_START = "sopflow.trial_start"
TRIAL_COMPARE = "sopflow.trial_compare"
ADOPT = "sopflow.adopt"


def builtin(engine: Engine) -> dict[str, Handler]:
    """The built-in handlers, bound to `engine`."""
    return {
        TRIAL_START: lambda call: trial_start(engine, call),
        TRIAL_COMPARE: lambda call: trial_compare(engine, call),
        ADOPT: lambda call: adopt(engine, call),
    }


def _field(data: Mapping[str, Any], name: str, kind: type) -> Any:
    value = data.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InvalidData(
            f"the case's data has no {kind.__name__} `{name}`",
            hint=f"give `{name}` before this step",
        )
    return value


def _actor(engine: Engine, call: AutomaticCall) -> str:
    case = engine.case(call.case_id)
    return case.submitter or case.starter


def trial_start(engine: Engine, call: AutomaticCall) -> Mapping[str, Any]:
    definition = _field(call.data, "definition", str)
    split = {_field(call.data, "sop_version", int): 50, _field(call.data, "revised_version", int): 50}
    running = trials.policy(engine, definition).split
    if running is None or dict(running) != split:
        trials.start(engine, definition, split, actor=_actor(engine, call))
    return {"versions": ",".join(f"{v}={w}" for v, w in sorted(split.items()))}


def trial_compare(engine: Engine, call: AutomaticCall) -> Mapping[str, Any]:
    definition = _field(call.data, "definition", str)
    old = _field(call.data, "sop_version", int)
    new = _field(call.data, "revised_version", int)
    if trials.policy(engine, definition).split is not None:
        trials.stop(engine, definition, actor=_actor(engine, call))
    status = trials.status(engine, definition)
    figures = {f.version: f for f in status.versions}
    answer: dict[str, Any] = {}
    for name, version in (("old", old), ("new", new)):
        found = figures.get(version)
        answer[f"{name}_cases"] = found.started if found else 0
        median = found.median_cycle_seconds if found else None
        if median is not None:
            answer[f"{name}_median_hours"] = round(median / 3600, 2)
    verdict = getattr(status.comparison, "verdict", None)
    if not isinstance(verdict, str):
        parts = []
        for name, version in (("old", old), ("new", new)):
            hours = answer.get(f"{name}_median_hours")
            shown = f"median cycle {hours} h" if hours is not None else "none closed yet"
            parts.append(f"version {version}: {answer[f'{name}_cases']} case(s), {shown}")
        verdict = "; ".join(parts)
    answer["verdict"] = verdict
    return answer


def adopt(engine: Engine, call: AutomaticCall) -> Mapping[str, Any]:
    definition = _field(call.data, "definition", str)
    version = _field(call.data, "adopted_version", int)
    if trials.policy(engine, definition).adopted != version:
        trials.adopt(engine, definition, version, actor=_actor(engine, call))
    return {"adopted": version}
