"""Commands of the SOP lifecycle: what changed between two versions (`defs diff`, `diagram --diff`), trials
(`trial start|status|stop`), adoption (`adopt`) and the migration of running cases (`migrate`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from sopflow.cli.main import emit, settings
from sopflow.cli.params import VERSION, WHERE, Where
from sopflow.cli.render import dot, mermaid, table

if TYPE_CHECKING:
    from sopflow.engine.definition.model import Definition
    from sopflow.engine.lifecycle.diff import Diff
    from sopflow.engine.lifecycle.trials import LifecycleAct

_MARKS = {
    "added": ("fill:#dcfce7,stroke:#15803d", "#dcfce7"),
    "removed": ("fill:#fee2e2,stroke:#b91c1c,stroke-dasharray:4 3", "#fee2e2"),
    "changed": ("fill:#fef3c7,stroke:#b45309", "#fef3c7"),
}


@click.command("diff")
@click.argument("definition")
@click.argument("old", type=VERSION)
@click.argument("new", type=VERSION)
def defs_diff(definition: str, old: int, new: int) -> None:
    """What changed from version OLD to NEW of a deployed DEFINITION: states, events, guards, roles,
    deadlines and data fields added, removed or changed."""
    found = settings().engine().diff(definition, old, new)
    if settings().json:
        emit(found.as_dict())
        return
    if not found.changes:
        click.echo(f"{definition}@{old} and @{new} mean the same process: nothing changed")
        return
    click.echo(f"{definition}: from version {old} to {new}, {len(found.changes)} change(s)")
    sign = {"added": "+", "removed": "-", "changed": "~"}
    for change in found.changes:
        click.echo(f"  {sign[change.kind]} {change.words}")


def diff_chart(old: Definition, new: Definition, found: Diff, fmt: str) -> str:
    """The new version's diagram with the states the diff names coloured (added green, changed amber) and
    the removed ones drawn from the old version (red, dashed)."""
    marks = found.marked_states()
    removed = [name for name, kind in marks.items() if kind == "removed" and name in old.states]
    if fmt == "mermaid":
        lines = [mermaid(new), f"  %% changes from {old.key} to {new.key}"]
        lines += [f'  {name}["{name} (removed)"]' for name in removed]
        for kind, (style, _fill) in _MARKS.items():
            names = [n for n, k in marks.items() if k == kind and (n in new.states or kind == "removed")]
            if names:
                lines.append(f"  classDef {kind} {style}")
                lines.append(f"  class {','.join(names)} {kind}")
        return "\n".join(lines)
    chart = dot(new).rstrip().removesuffix("}")
    extra = [f"  // changes from {old.key} to {new.key}"]
    for name, kind in marks.items():
        fill = _MARKS[kind][1]
        if kind == "removed":
            label = json.dumps(f"{name} (removed)", ensure_ascii=False)
            extra.append(f'  {json.dumps(name)} [label={label} style="filled,dashed" fillcolor="{fill}"];')
        elif name in new.states:
            extra.append(f'  {json.dumps(name)} [style=filled fillcolor="{fill}"];')
    return chart + "\n".join(extra) + "\n}"


@click.group()
def trial() -> None:
    """Trials: new cases split between versions of a definition."""


@trial.command("start")
@click.argument("definition")
@click.option("--versions", required=True, help="The split, VERSION=WEIGHT,...: e.g. 1=50,2=50.")
def trial_start(definition: str, versions: str) -> None:
    """Start a trial of DEFINITION: new cases start on the versions by weight, decided by a hash of each
    start's key (a retried start lands on the same version). For an administrator or the process owner."""
    from sopflow.engine.lifecycle.trials import parse_split

    s = settings()
    act = s.engine().trial_start(definition, parse_split(versions), actor=s.actor())
    _acted(
        act,
        f"trial of {definition} started: " + ", ".join(f"version {v} {w}" for v, w in act.versions.items()),
    )


@trial.command("stop")
@click.argument("definition")
def trial_stop(definition: str) -> None:
    """Stop the trial of DEFINITION: new cases start on the newest version again (or adopt one)."""
    s = settings()
    act = s.engine().trial_stop(definition, actor=s.actor())
    _acted(act, f"trial of {definition} stopped: new cases start on the newest version")


@trial.command("status")
@click.argument("definition")
def trial_status(definition: str) -> None:
    """Which version new cases of DEFINITION start on, and per version of the last trial: cases started,
    closed, and the median cycle time of those closed."""
    found = settings().engine().trial_status(definition, viewer=settings().user)
    policy = found.policy
    if policy.split is not None:
        now = "trial " + ", ".join(f"{v}={w}" for v, w in sorted(policy.split.items()))
    elif policy.adopted is not None:
        now = f"version {policy.adopted} (adopted)"
    else:
        now = "the newest version"
    rows = [
        {
            "version": f.version,
            "weight": f.weight,
            "started": f.started,
            "closed": f.closed,
            "median_cycle_seconds": f.median_cycle_seconds,
        }
        for f in found.versions
    ]
    comparison = found.comparison
    if settings().json:
        shown = comparison.as_dict() if hasattr(comparison, "as_dict") else comparison
        emit({"definition": definition, "new_cases_start_on": now, "versions": rows, "comparison": shown})
        return
    since = f" since {policy.since:%Y-%m-%d %H:%M} by {policy.by}" if policy.since and policy.by else ""
    click.echo(f"{definition}: new cases start on {now}{since}")
    if rows:
        click.echo(
            table(
                ["version", "weight", "started", "closed", "median cycle"],
                [
                    (
                        r["version"],
                        r["weight"],
                        r["started"],
                        r["closed"],
                        _span(r["median_cycle_seconds"]),
                    )
                    for r in rows
                ],
            )
        )
    if comparison is not None:
        click.echo(str(getattr(comparison, "verdict", comparison)))


@trial.command("log")
@click.argument("definition", required=False)
def trial_log(definition: str | None) -> None:
    """Every trial, adoption and migration (of DEFINITION, or of all), accepted or refused, oldest first:
    who did it, in which role, when."""
    acts = settings().engine().lifecycle_log(definition)
    if settings().json:
        emit([a.as_dict() for a in acts])
        return
    rows = [
        (
            f"{a.at:%Y-%m-%d %H:%M}",
            a.definition_id,
            a.action + (" (dry run)" if a.detail.get("dry_run") else ""),
            ", ".join(f"{k}={v}" for k, v in a.versions.items()),
            a.actor,
            a.role or "",
            "accepted" if a.accepted else f"refused: {a.reason}",
        )
        for a in acts
    ]
    click.echo(table(["at", "definition", "action", "versions", "by", "role", "outcome"], rows))


@click.command()
@click.argument("definition")
@click.argument("version", type=VERSION)
def adopt(definition: str, version: int) -> None:
    """Adopt VERSION of DEFINITION: every new case starts on it from now on, and a running trial ends.
    For an administrator or the process owner; audited."""
    s = settings()
    act = s.engine().adopt(definition, version, actor=s.actor())
    _acted(act, f"{definition}@{version} adopted: new cases start on it")


@click.command()
@click.argument("definition")
@click.option("--from", "from_version", type=VERSION, required=True, help="The version the cases run on.")
@click.option("--to", "to_version", type=VERSION, required=True, help="The version to move them to.")
@click.option("--map", "maps", multiple=True, help="OLD_STATE=NEW_STATE, for a state renamed or removed.")
@click.option("--state", "states", multiple=True, help="Only cases in this state (repeatable).")
@click.option("--where", "where", type=WHERE, multiple=True, help="Only cases whose data FIELD=VALUE.")
@click.option(
    "--default", "defaults", type=WHERE, multiple=True, help="FIELD=VALUE for a field a case lacks."
)
@click.option("--dry-run", is_flag=True, help="Say per case what would happen, and why not; write nothing.")
@click.option("--comment", help="Why, kept in each migrated case's record.")
def migrate(
    definition: str,
    from_version: int,
    to_version: int,
    maps: tuple[str, ...],
    states: tuple[str, ...],
    where: tuple[Where, ...],
    defaults: tuple[Where, ...],
    dry_run: bool,
    comment: str | None,
) -> None:
    """Move the running cases of DEFINITION from one version to another, each in its own transaction with
    its audit record; a case that cannot move (its state, its data, its assignee) stays, with the reason.
    For an administrator or the process owner. Exit 1 when a case failed to be written (run it again)."""
    from sopflow.engine.errors import UsageError

    state_map: dict[str, str] = {}
    for raw in maps:
        old, equals, new = raw.partition("=")
        if not equals or not old.strip() or not new.strip():
            raise UsageError(f"--map {raw}: not OLD_STATE=NEW_STATE", hint="e.g. --map review=check")
        if old.strip() in state_map:
            raise UsageError(
                f"--map names `{old.strip()}` twice ({state_map[old.strip()]}, {new.strip()})",
                hint="give each old state one --map",
            )
        state_map[old.strip()] = new.strip()
    given: dict[str, Any] = {}
    for d in defaults:
        if d.field in given:
            raise UsageError(
                f"--default names `{d.field}` twice ({given[d.field]}, {d.value})",
                hint="give each field one --default",
            )
        given[d.field] = d.value
    s = settings()
    engine = s.engine()
    results = []
    for state in states or (None,):
        filters: dict[str, Any] = {f"data.{w.field}": w.value for w in where}
        if state is not None:
            filters["state"] = state
        results.append(
            engine.migrate(
                definition,
                from_version,
                to_version,
                actor=s.actor(),
                state_map=state_map,
                defaults=given,
                where=filters,
                dry_run=dry_run,
                comment=comment,
            )
        )
    cases = [c for r in results for c in r.cases]
    moved = sum(r.moved for r in results)
    skipped = sum(r.skipped for r in results)
    failed = sum(r.failed for r in results)
    if s.json:
        emit(
            {
                "definition": definition,
                "from": from_version,
                "to": to_version,
                "dry_run": dry_run,
                "moved": moved,
                "skipped": skipped,
                "failed": failed,
                "cases": [c.as_dict() for c in cases],
            }
        )
    else:
        for c in cases:
            click.echo(f"case {c.case_id}: {c.outcome}: {c.reason}")
        verb = "would move" if dry_run else "moved"
        click.echo(
            f"{definition} {from_version} → {to_version}: {moved} {verb}, {skipped} skipped, {failed} failed"
            + (" (dry run: nothing was written)" if dry_run else "")
        )
    if failed:  # a case the migration could not write (not one the rules keep): exit 1, run it again
        click.echo(f"error: {failed} case(s) failed to migrate: run the migration again", err=True)
        raise click.exceptions.Exit(1)


def _acted(act: LifecycleAct, words: str) -> None:
    if settings().json:
        emit(act.as_dict())
        return
    click.echo(f"{words} (by {act.actor} as {act.role})")


def _span(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes = int(seconds // 60)
    return f"{minutes // 1440}d{minutes % 1440 // 60:02d}h{minutes % 60:02d}m"


COMMANDS = [trial, adopt, migrate]
