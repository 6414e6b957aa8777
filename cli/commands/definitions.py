"""Commands for process owners and administrators: validate, simulate, diagram, deploy, defs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sopflow.cli.main import emit, settings
from sopflow.cli.params import CASE, JSON_OBJECT, VERSION, json_object
from sopflow.cli.render import dot, mermaid, shipped_definitions, table, text

if TYPE_CHECKING:
    from sopflow.engine.definition.model import Definition, Org, State
    from sopflow.engine.scheduler import ScheduleStatus
    from sopflow.engine.simulate import ClockedSimulation


def _paths(paths: tuple[Path, ...]) -> list[Path]:
    return list(paths) if paths else [Path("definitions")]


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
def validate(paths: tuple[Path, ...]) -> None:
    """Check definitions and the org (files or folders; default: definitions/).

    Every problem of every file is reported as FILE:LINE:COL: error[CODE]: message. Exit 0 when clean
    (warnings allowed), 1 when a definition has errors, 2 when a path is missing or holds no definition.
    """
    from sopflow.engine.definition.validate import validate_paths

    report = validate_paths(_paths(paths))
    errors = [p for p in report.problems if p.severity == "error"]
    warnings = [p for p in report.problems if p.severity == "warning"]
    if settings().json:
        emit(
            {
                "ok": report.ok,
                "definitions": [d.key for d in report.definitions],
                "org": report.org.id if report.org else None,
                "problems": [p.as_dict() for p in report.problems],
            }
        )
    else:
        for problem in report.problems:
            click.echo(problem.render(), err=problem.severity == "error")
        checked = len(report.files)
        click.echo(
            f"{checked} file(s) checked: {len(errors)} error(s), {len(warnings)} warning(s)",
            err=bool(errors),
        )
    if errors:
        raise click.exceptions.Exit(1)


def resolve_definition_file(name: str) -> Path:
    """A definition named by path, or by id: ./definitions/ID.yaml, else the one shipped with sopflow."""
    from sopflow.engine.errors import UsageError

    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise UsageError(
                f"no definition file `{name}`", hint="give a path to a .yaml file or a definition id"
            )
        return path
    local = Path("definitions") / f"{name}.yaml"
    if local.is_file():
        return local
    shipped = shipped_definitions() / f"{name}.yaml"
    if shipped.is_file():
        return shipped
    raise UsageError(
        f"no definition `{name}`: not a file, not definitions/{name}.yaml",
        hint="`sopflow validate` lists the definitions it finds",
    )


def load_with_org(name: str, org_path: Path | None) -> tuple[Definition, Org]:
    from sopflow.engine.definition.validate import load_definition_file, load_org_file
    from sopflow.engine.errors import UsageError

    file = resolve_definition_file(name)
    org_file = org_path or file.parent / "org.yaml"
    if not org_file.is_file():
        raise UsageError(f"no org file at `{org_file}`", hint="pass --org PATH/TO/org.yaml")
    org = load_org_file(org_file)
    return load_definition_file(file, org), org


@click.command()
@click.argument("definition")
@click.argument("steps", nargs=-1)
@click.option("--data", "data_json", type=JSON_OBJECT, help="The case's start data, as a JSON object.")
@click.option(
    "--org", "org_path", type=click.Path(path_type=Path), help="org.yaml (default: beside the file)."
)
def simulate(
    definition: str, steps: tuple[str, ...], data_json: dict[str, Any] | None, org_path: Path | None
) -> None:
    """Run a case through a definition in memory, no database: try a change before it goes live.

    Each STEP is EVENT, EVENT@USER or EVENT@USER=JSON (the payload). Without @USER the step is fired as
    the --as user. The case starts as the --as user (or the first step's user). Every step prints the new
    state, who may act next, and why a refused step was refused; the run goes on after a refusal and
    exits 1 at the end. A STEP +DURATION (+3h30m) or +working:DURATION moves the clock: deadlines,
    escalations and timeouts due on the way fire, each at its time (the case starts on Monday
    2026-03-02 09:00 in the org's time zone, in a throwaway database). A STEP child:EVENT@USER fires
    on the case's open sub-process case (the definitions it runs are deployed from beside it). A STEP
    case:suspend@USER=REASON, case:resume@USER or case:cancel@USER=REASON acts on the whole case.

    \b
    sopflow --as li.na simulate content-review \\
        'submit={"material_url": "https://cms.example.com/m/1"}' claim@wang.fang \\
        'pass_screening@wang.fang={"topic_compliant": true, "typo_free": true}' \\
        --data '{"title": "春季活动", "origin": "original"}'
    """
    from sopflow.engine.errors import SopflowError, UsageError
    from sopflow.engine.simulate import ClockedSimulation

    parsed = [_parse_clock(s) if s.startswith("+") else _parse_step(s) for s in steps]
    starter = settings().user or (parsed[0][1] if parsed and isinstance(parsed[0], tuple) else None)
    if starter is None:
        raise UsageError("who starts the case?", hint="pass --as USER or write the first step as EVENT@USER")
    defn, org = load_with_org(definition, org_path)
    file = resolve_definition_file(definition)
    sim = ClockedSimulation(file, org_path or file.parent / "org.yaml", org)
    click.get_current_context().call_on_close(sim.close)
    sim.start(defn.id, starter, data_json or {})
    out: list[dict[str, Any]] = [{"step": "start", "as": starter, "state": sim.state}]
    as_json = settings().json
    if not as_json:
        click.echo(f"start as {starter} → {sim.state} ({text(defn.states[sim.state].title)})")
        _next(defn, sim.state, sim.assignee, sim.branches)
    failed: SopflowError | None = None
    for item in parsed:
        if isinstance(item, _Clock):
            _advance(defn, sim, item, out, as_json)
            continue
        event, user, payload = item
        who = user or settings().user or starter
        if event.startswith(CASE_PREFIX):
            failed = _control(sim, event.removeprefix(CASE_PREFIX), who, payload, out, as_json) or failed
            continue
        child = event.startswith(CHILD_PREFIX)  # child:EVENT acts on the case's open sub-process case
        event = event.removeprefix(CHILD_PREFIX)
        try:
            step = sim.fire(who, event, payload, child=child)
        except SopflowError as exc:
            failed = failed or exc
            out.append({"step": event, "as": who, "refused": exc.as_dict()})
            if not as_json:
                click.echo(f"error: {event} as {who}: REFUSED ({exc.kind}): {exc}", err=True)
            continue  # reported; the next step is tried on the case as it stands
        out.append({"step": event, "as": who, "state": sim.state, "detail": dict(step.detail)})
        if not as_json:
            routes = step.detail.get("routes", [])
            path = (
                " → ".join([step.from_state, *step.entered])
                if step.moved
                else f"{step.from_state} → {step.to_state}"
            )
            routed = "".join(f" [{r['choice']}: {r['when']}]" for r in routes)
            stay = (
                " (stays: waiting for more votes)"
                if not step.moved and event in ("approve", "reject")
                else ""
            )
            click.echo(f"{event} as {who}: {path}{routed}{stay}")
            _next(defn, sim.state, sim.assignee, sim.branches)
    if as_json:
        emit({"definition": defn.key, "steps": out, "state": sim.state, "data": dict(sim.data)})
    if failed is not None:
        raise click.exceptions.Exit(failed.exit_code)


CHILD_PREFIX = "child:"
"""A simulate step `child:EVENT@USER` fires on the case's open sub-process case."""
CASE_PREFIX = "case:"
"""A simulate step `case:suspend@USER=REASON`, `case:resume@USER` or `case:cancel@USER=REASON` acts on
the whole case."""


def _control(
    sim: Any, act: str, who: str, payload: dict[str, Any], out: list[dict[str, Any]], as_json: bool
) -> Any:
    """A `case:ACT` step: the error when it was refused (reported), else None."""
    from sopflow.engine.errors import SopflowError, UsageError

    if act not in ("suspend", "resume", "cancel"):
        raise UsageError(
            f"`case:{act}` is not a simulate step", hint="write case:suspend, case:resume or case:cancel"
        )
    try:
        sim.control(who, act, payload.get("reason"))
    except SopflowError as exc:
        out.append({"step": f"case:{act}", "as": who, "refused": exc.as_dict()})
        if not as_json:
            click.echo(f"error: case:{act} as {who}: REFUSED ({exc.kind}): {exc}", err=True)
        return exc
    out.append({"step": f"case:{act}", "as": who, "state": sim.state})
    if not as_json:
        done = {"suspend": "suspended", "resume": "resumed", "cancel": "cancelled"}[act]
        click.echo(f"case:{act} as {who}: the case is {done} in {sim.state}")
    return None


@dataclass(frozen=True)
class _Clock:
    """A simulate step that moves the clock: +3h30m, or +working:2h by the org's calendar."""

    seconds: int
    working: bool
    text: str


def _parse_clock(raw: str) -> _Clock:
    from sopflow.engine.definition.build import parse_duration
    from sopflow.engine.errors import UsageError

    text = raw.removeprefix("+")
    working = text.startswith("working:")
    # A 40-character duration is already absurd; a longer one could hold a number int() refuses.
    seconds = parse_duration(text.removeprefix("working:")) if len(text) <= 40 else None
    if seconds is None:
        raise UsageError(
            f"`{raw[:40]}` is not a clock step",
            hint="write +DURATION or +working:DURATION, e.g. +3h30m, +working:2h",
        )
    if seconds > MAX_CLOCK_STEP:
        raise UsageError(
            f"`{raw}` moves the clock more than ten years",
            hint="a simulated case runs for at most ten years: give a shorter step, e.g. +30d",
        )
    return _Clock(seconds, working, text)


MAX_CLOCK_STEP = 3650 * 86400
"""The longest clock step of a simulation: ten years, as far as a working-time calendar looks ahead."""


def _advance(
    defn: Definition, sim: ClockedSimulation, clock: _Clock, out: list[dict[str, Any]], as_json: bool
) -> None:
    moved = sim.advance(clock.seconds, working=clock.working)
    out.append(
        {
            "step": f"+{clock.text}",
            "now": moved.now.isoformat(),
            "timers_fired": list(moved.timers_fired),
            "notifications": [{"to": to, "subject": subject} for to, subject in moved.notifications],
            "state": sim.state,
        }
    )
    if as_json:
        return
    fired = ", ".join(moved.timers_fired) or "no timer fired"
    click.echo(f"+{clock.text} → {moved.now:%Y-%m-%d %H:%M %Z}: {fired}")
    for to, subject in moved.notifications:
        click.echo(f"  notified {to}: {subject}")
    _next(defn, sim.state, sim.assignee, sim.branches)


def _parse_step(raw: str) -> tuple[str, str | None, dict[str, Any]]:
    head, _, payload = raw.partition("=")
    event, _, user = head.partition("@")
    if event.startswith(CASE_PREFIX):  # case:ACT@USER=REASON: the reason is plain text
        return event, user or None, {"reason": payload} if payload else {}
    if not payload:
        return event, user or None, {}
    hint = f'quote the step for the shell: \'{head}={{"field": "value"}}\''
    return event, user or None, json_object(payload, f"the payload of `{event}`", hint)


def _next(defn: Definition, state_name: str, assignee: str | None, branches: Sequence[Any] = ()) -> None:
    state = defn.states[state_name]
    if state.final:
        click.echo("  the case is closed")
        return
    for b in branches:
        # A parallel state's branches: each one's state, and who acts on it (BRANCH.EVENT@USER).
        acts = f" (assignee: {b.assignee})" if b.assignee else f" ({b.owner})" if b.owner else ""
        click.echo(f"  branch {b.name}: {b.state}" + (" (branch done)" if b.done else acts))
    if state.subprocess is not None:
        click.echo(f"  waiting: a {state.subprocess.definition} case runs (act on it with child:EVENT@USER)")
    if state.assign is not None and state.assign.kind == "claim" and not assignee:
        click.echo(f"  next: claim by {state.assign.value} (nobody has taken it yet)")
    for event in state.events:
        if all(t.clock_only for t in state.transitions if t.event == event) and not (
            state.approval and event in ("approve", "reject")
        ):
            continue  # only the clock fires it: nobody is offered it
        who = sorted({r for t in state.transitions if t.event == event for r in t.by})
        if state.approval and event in ("approve", "reject"):
            who = list(state.approval.roles)
        words = {"$assignee": "the case's assignee", "$starter": "whoever started the case"}
        names = " or ".join(words.get(w, w) for w in who)
        click.echo(f"  next: {event} by {names}" + (f" (assignee: {assignee})" if assignee else ""))


@click.command()
@click.argument("target")
@click.option("--format", "fmt", type=click.Choice(["mermaid", "dot"]), default="mermaid", show_default=True)
@click.option("--diff", "versions", type=VERSION, nargs=2, help="OLD NEW: colour what changed since OLD.")
def diagram(target: str, fmt: str, versions: tuple[int, int] | None) -> None:
    """Draw a definition (a file or id) or a case (a number) as a flow chart, with each step's owner and
    output; for a case, the path it took and its current state are marked. With --diff OLD NEW, a deployed
    definition's version NEW with the states that changed since OLD coloured (added, changed, removed)."""
    draw = mermaid if fmt == "mermaid" else dot
    if versions:
        from sopflow.cli.commands.lifecycle import diff_chart
        from sopflow.engine.errors import UsageError

        if target.lstrip("#").isascii() and target.lstrip("#").isdigit():
            raise UsageError(
                f"--diff compares two versions of a definition; {target} is a case number",
                hint=f"name its definition: sopflow diagram DEFINITION --diff {versions[0]} {versions[1]}",
            )
        engine = settings().engine()
        old, new = (engine.definition(target, v) for v in versions)
        chart = diff_chart(old, new, engine.diff(target, *versions), fmt)
        _drawn(new, fmt, chart, None, None)
        return
    if target.lstrip("#").isascii() and target.lstrip("#").isdigit():
        engine = settings().engine()
        ctx = click.get_current_context()
        param = next(p for p in ctx.command.params if p.name == "target")
        viewer = settings().user
        case = engine.case(CASE.convert(target, param, ctx), viewer=viewer)
        history = engine.history(case.id, viewer=viewer)
        path = [r.to_state for r in history if r.outcome == "accepted" and r.to_state]
        routes = [r["choice"] for rec in history for r in rec.detail.get("routes", [])]
        defn = engine.definition(case.definition_id, case.definition_version)
        chart = draw(defn, [*path, *routes], case.state)
        parent, children = engine.links(case.id, viewer=viewer)
        # The linked cases, as comments both formats keep: a diagram draws one case's definition.
        mark = "%%" if fmt == "mermaid" else "//"
        notes = [f"  {mark} parent: case {parent.parent_case_id}"] if parent else []
        notes += [
            f"  {mark} sub-process: case {c.case_id} ({c.definition_id}, {c.state}, "
            f"{'open' if c.open else 'closed'})"
            for c in children
        ]
        if notes and fmt == "dot":
            chart = chart.rstrip().removesuffix("}") + "\n".join(notes) + "\n}"
        elif notes:
            chart = chart.rstrip("\n") + "\n" + "\n".join(notes)
        _drawn(defn, fmt, chart, case.id, case.state)
        return
    from sopflow.engine.definition.validate import load_definition_file

    defn = load_definition_file(resolve_definition_file(target))
    _drawn(defn, fmt, draw(defn), None, None)


def _drawn(defn: Definition, fmt: str, chart: str, case: int | None, current: str | None) -> None:
    if settings().json:
        emit({"definition": defn.key, "case": case, "current": current, "format": fmt, "diagram": chart})
    else:
        click.echo(chart)


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--allow-stranded",
    is_flag=True,
    help="Deploy an org that drops people or roles running cases still point at, and list those cases.",
)
@click.option(
    "--replace-org",
    is_flag=True,
    help="Deploy an org of another id than the deployed one, replacing that organisation.",
)
def deploy(paths: tuple[Path, ...], allow_stranded: bool, replace_org: bool) -> None:
    """Check and store definitions and the org (default: definitions/). Nothing is stored unless every
    file is clean (one org file at most). Identical content is a no-op; changed content needs a new
    `version:`. The org is deployed when named or in a folder given; an org.yaml beside a definition
    file named alone only checks it, and is refused if it differs from the deployed org (name it to
    deploy it). An org of another id is refused unless --replace-org. An org that drops people or roles
    running cases point at (starters, assignees, submitters, people in user fields, running
    delegations, the roles of the states they wait in) is refused, each case named; with
    --allow-stranded it is deployed and each case is listed, to reassign."""
    import sys

    from sopflow.engine.errors import StrandedCases

    engine = settings().engine()
    show = sys.stderr.isatty() and not settings().json

    def progress(done: int, total: int) -> None:
        if show:
            click.echo(f"\rdeploying {done}/{total}…", err=True, nl=done == total)

    try:
        result = engine.deploy(
            _paths(paths),
            actor=settings().user,
            progress=progress,
            allow_stranded=allow_stranded,
            replace_org=replace_org,
        )
    except StrandedCases as exc:
        if not settings().json:
            for case, problem in exc.stranded:
                click.echo(f"stranded: {f'case {case}' if case else 'delegation'}: {problem}", err=True)
        raise
    stranded = [{"case": case or None, "problem": problem} for case, problem in result.stranded]
    if settings().json:
        emit({"definitions": result.definitions, "org_changed": result.org_changed, "stranded": stranded})
        return
    if result.org_changed:
        click.echo("org: deployed")
    for case, problem in result.stranded:
        click.echo(f"stranded: {f'case {case}' if case else 'delegation'}: {problem}")
    for key, new in result.definitions.items():
        click.echo(f"{key}: {'deployed' if new else 'unchanged'}")


@click.group()
def defs() -> None:
    """Deployed definitions."""


@defs.command("list")
def defs_list() -> None:
    """Every deployed definition version."""
    items = settings().engine().definitions()
    if settings().json:
        emit(
            [
                {
                    "id": d.id,
                    "version": d.version,
                    "title": {"zh": d.title.zh, "en": d.title.en},
                    "content_hash": d.content_hash,
                }
                for d in items
            ]
        )
        return
    click.echo(
        table(
            ["id", "version", "title", "states"],
            [(d.id, d.version, text(d.title), len(d.states)) for d in items],
        )
    )


def _ways(state: State) -> list[str]:
    """Each event of a state with where it leads, e.g. `submit → screening`."""
    out = []
    for event in state.events:
        if state.approval is not None and event in ("approve", "reject"):
            decided = state.approval.approved if event == "approve" else state.approval.rejected
            out.append(f"{event} (a vote) → {decided}")
            continue
        alternatives = [t for t in state.transitions if t.event == event]
        targets = dict.fromkeys(t.target for t in alternatives)
        clock = " (the clock's)" if all(t.clock_only for t in alternatives) else ""
        out.append(f"{event}{clock} → {'/'.join(targets)}")
    if state.subprocess is not None:
        sub = state.subprocess
        out += [f"{sub.definition} {outcome} → {target}" for outcome, target in sub.on.items()]
    return out


@defs.command("show")
@click.argument("definition_id")
@click.option("--version", type=VERSION, help="A version (default: the newest).")
def defs_show(definition_id: str, version: int | None) -> None:
    """A deployed definition: its states, who owns them, their events, deadlines and data fields."""
    d = settings().engine().definition(definition_id, version)
    if settings().json:
        from sopflow.engine.definition.model import thawed_json

        emit(
            {
                "id": d.id,
                "version": d.version,
                "title": {"zh": d.title.zh, "en": d.title.en},
                "source": d.rulebook,
                "initial": d.initial,
                "content_hash": d.content_hash,
                "data": thawed_json(d.data_schema),
                "states": {
                    n: {
                        "title": text(s.title),
                        "owner": s.owner,
                        "final": s.final,
                        "events": list(s.events),
                        "targets": list(s.targets()),
                        "subprocess": None
                        if s.subprocess is None
                        else {"definition": s.subprocess.definition, "on": dict(s.subprocess.on)},
                    }
                    for n, s in d.states.items()
                },
                "deadlines": [
                    {
                        "name": x.name,
                        "from": x.start,
                        "until": list(x.until),
                        "within_seconds": x.within_seconds,
                    }
                    for x in d.deadlines
                ],
                "assumptions": [text(a) for a in d.assumptions],
                "start": None
                if d.start is None
                else {"by": list(d.start.by), "when": d.start.when.text if d.start.when else None},
                "schedules": [
                    {
                        "name": s.name,
                        "cron": s.schedule.cron,
                        "working_day": s.schedule.working_day,
                        "since": s.since.isoformat(),
                        "started": s.started,
                        "last_period": s.last_period,
                        "last_case": s.last_case,
                        "next_due": None if s.next_due is None else s.next_due.isoformat(),
                    }
                    for s in (_schedules(d.id) if version is None else [])
                ],
            }
        )
        return
    click.echo(f"{d.key}  {text(d.title)}" + (f"  [{d.rulebook}]" if d.rulebook else ""))
    if d.description:
        click.echo(text(d.description))
    required = list(d.data_schema.get("required", ()))
    fields = list(d.data_schema.get("properties", {}))
    click.echo(
        f"data fields: {', '.join(f + ('*' if f in required else '') for f in fields) or 'any'} (* required)"
    )
    if d.start is not None:
        who = f"by {', '.join(d.start.by)}" if d.start.by else "by anyone"
        click.echo(f"started {who}" + (f", when {d.start.when.text}" if d.start.when else ""))
    click.echo("")
    click.echo(
        table(
            ["state", "title", "owner", "events → targets"],
            [
                (
                    n,
                    text(s.title),
                    s.owner or "",
                    "final" if s.final else ", ".join(s.targets()) if s.is_choice else "; ".join(_ways(s)),
                )
                for n, s in d.states.items()
            ],
        )
    )
    for x in d.deadlines:
        click.echo(
            f"deadline {x.name}: {x.start} → {'/'.join(x.until)} within {x.within_seconds // 60} min"
            f" ({x.calendar} time)"
        )
    for s in _schedules(d.id) if version is None else []:
        rule = s.schedule.working_day
        moved = "" if rule == "any" else f", moved to the {rule} working day"
        last = f"last period {s.last_period} (case {s.last_case})" if s.last_period else "no period yet"
        upcoming = f"next due {s.next_due:%Y-%m-%d %H:%M %Z}" if s.next_due else "no next period"
        click.echo(f"schedule {s.name}: `{s.schedule.cron}`{moved}; {s.started} started, {last}; {upcoming}")
    for a in d.assumptions:
        click.echo(f"assumption: {text(a)}")


def _schedules(definition_id: str) -> list[ScheduleStatus]:
    """The schedules of the newest version (a schedule starts cases of the newest version only)."""
    return settings().engine().schedules(definition_id)


COMMANDS = [validate, simulate, diagram, deploy, defs]
