"""`sopflow report`, `sopflow baseline set|update|list` and `sopflow compare`: the figures a manager reads,
from the audit trail (engine/insight)."""

from __future__ import annotations

import csv
import io
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sopflow.cli.main import emit, settings
from sopflow.cli.output import whole_file_target
from sopflow.cli.params import TIME, VERSION
from sopflow.cli.render import duration, table

if TYPE_CHECKING:
    from sopflow.engine.insight import Comparison, ProcessReport, Report


def span(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if not abs(seconds) < timedelta.max.total_seconds():  # a figure no timedelta holds: never a crash
        return f"{seconds / 86400:.3g}d"
    return duration(timedelta(seconds=round(seconds)))


def share(value: float | None) -> str:
    return "" if value is None else f"{value:.0%}"


def change(value: float | None) -> str:
    return "" if value is None else f"{value * 100:+.0f} %".replace("-", "−")


class Duration(click.ParamType[float]):
    """A length of time as the definitions write it: 4h, 1h30m, 2d."""

    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        from sopflow.engine.definition.build import parse_duration
        from sopflow.engine.insight.baseline import LONGEST

        seconds = parse_duration(str(value))
        if not seconds:
            self.fail(f"{value!r} is not a duration; write it as 4h, 1h30m or 2d")
        if seconds > LONGEST:
            self.fail(f"{value!r} is too long: a baseline is at most {LONGEST // 86400}d")
        return float(seconds)


@click.command()
@click.option("--definition", help="Only this definition (default: each that has records).")
@click.option("--since", type=TIME, help="Only records at or after this time (ISO 8601).")
@click.option("--until", type=TIME, help="Only records before this time (ISO 8601).")
@click.option(
    "--by",
    type=click.Choice(["step", "person", "role", "version", "week"]),
    default="step",
    show_default=True,
    help="How the handling times are grouped.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "csv"]), default="table", help="Terminal tables or CSV."
)
@click.option(
    "--html",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the charts as one self-contained HTML file.",
)
@click.option("--check", is_flag=True, help="Prove the derived figures equal a recomputation from the trail.")
def report(
    definition: str | None,
    since: datetime | None,
    until: datetime | None,
    by: str,
    fmt: str,
    html: Path | None,
    check: bool,
) -> None:
    """Per process and per step: cases, handling time (mean, median, p90, max; wall-clock and working time)
    against its baseline, SLA compliance and breaches by escalation rung, send-backs, rejections and refused
    attempts, errors and satisfaction per month, workload per person and role, and the open backlog by
    age. Shows only the cases the --as user may see."""
    from sopflow.engine.insight.report import check_period

    check_period(since, until)
    if html is not None:
        html = whole_file_target(html, "--html")
    engine = settings().engine()
    if check:
        from sopflow.engine.errors import AuditBroken

        engine.report(definition)  # brings the derived tables up to date
        problems = engine.report_check()
        if settings().json:
            emit({"ok": not problems, "problems": [{"case": c, "problem": p} for c, p in problems]})
        for case_id, problem in problems:
            click.echo(f"case {case_id}: {problem}")
        if problems:
            raise AuditBroken(
                f"{len(problems)} case(s) have derived figures their trail does not give",
                hint="rebuild them: sopflow report rebuilds every case whose trail grew; run audit verify",
            )
        if not settings().json:
            click.echo("the derived figures equal a recomputation from the audit trail")
        return
    found = engine.report(definition, since=since, until=until, by=by, viewer=settings().user)
    if html is not None:
        from sopflow.engine.insight.html import render

        _write(html, render(found))
    if settings().json:
        emit(found.as_dict())
    elif fmt == "csv":
        click.echo(_csv(found), nl=False)
    else:
        for process in found.processes:
            click.echo(_tables(process))
        if not found.processes:
            click.echo("no case has taken a step yet: nothing to report")
    if html is not None and not settings().json:
        click.echo(f"charts written to {html}")


def summary(p: ProcessReport) -> str:
    """A few lines of one process: cases, median time per step, deadlines kept."""
    lines = [f"{p.definition_id}: " + ", ".join(
        f"{s.key} {span(s.times.median)}" for s in p.steps if s.times.count
    ) + " (median handling time)"]  # fmt: skip
    lines += [
        f"  {d.deadline}: {d.met} of {d.spans} kept ({share(d.compliance)}), {d.breached} breached"
        for d in p.deadlines
    ]
    return "\n".join(lines)


def _write(path: Path, text: str) -> None:
    """Whole or not at all: a temporary file beside it, renamed."""
    path = path.expanduser()
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)
    except OSError as failed:
        from sopflow.engine.errors import UsageError

        partial.unlink(missing_ok=True)
        raise UsageError(
            f"the report cannot be written to `{path}`: {failed.strerror or failed}",
            hint="name a file in a folder you may write to",
        ) from None


def _tables(p: ProcessReport) -> str:
    out = [f"{p.title} ({p.definition_id})"]
    if p.cycle is not None:
        base = f", baseline {span(p.cycle_baseline)}" if p.cycle_baseline else ""
        out.append(
            f"cycle time of {p.cycle.count} closed case(s): median {span(p.cycle.median)}, "
            f"p90 {span(p.cycle.p90)}, working median {span(p.cycle.working_median)}{base}"
        )
    out.append(
        table(
            [
                p.by,
                "n",
                "mean",
                "median",
                "p90",
                "max",
                "work median",
                "baseline",
                "change",
                "sent back",
                "rejected",
                "refused",
                "errors",
            ],
            [
                [
                    s.key or "-",
                    s.times.count,
                    span(s.times.mean),
                    span(s.times.median),
                    span(s.times.p90),
                    span(s.times.max),
                    span(s.times.working_median),
                    span(s.baseline),
                    change(s.change) + (" !" if s.flagged else ""),
                    s.sendbacks,
                    s.rejections,
                    s.refused,
                    s.errors,
                ]
                for s in p.steps
            ],
        )
    )
    for s in p.steps:
        if s.baseline is not None and s.times.median is not None:
            flag = f" ! more than {p.threshold:.0%} worse than its baseline" if s.flagged else ""
            out.append(
                f"{s.key} median {span(s.times.median)}, baseline {span(s.baseline)} ({s.baseline_source}), "
                f"{change(s.change)}{flag}"
            )
    if p.deadlines:
        out.append(
            table(
                ["deadline", "spans", "met", "breached", "compliance", "rung 1", "rung 2", "rung 3+"],
                [
                    [d.deadline, d.spans, d.met, d.breached, share(d.compliance), *d.rungs]
                    for d in p.deadlines
                ],
            )
        )
    if p.months:
        score = (
            "CSAT" if p.satisfaction_scale == "csat" else "NPS" if p.satisfaction_scale else "satisfaction"
        )
        out.append(
            table(
                ["month", "cases", "errors", "error rate", "complaints", "scores", score],
                [
                    [
                        m.month,
                        m.cases,
                        m.errors,
                        share(m.error_rate),
                        m.complaints,
                        m.scores,
                        "" if m.satisfaction is None else f"{m.satisfaction:.0f}",
                    ]
                    for m in p.months
                ],
            )
        )
    if p.people or p.roles:
        out.append(
            table(
                ["person / role", "open", "done", "median working", "time put in"],
                [
                    [w.who, w.open, w.done, span(w.median_working), span(w.time_put_in)]
                    for w in (*p.people, *p.roles)
                ],
            )
        )
    if p.backlog:
        from sopflow.engine.insight.report import AGES

        out.append(
            table(
                ["open in", "cases", *(label for label, _ in AGES), "> 7d"],
                [[b.state, b.open, *b.ages] for b in p.backlog],
            )
        )
    return "\n\n".join(out) + "\n"


def _csv(found: Report) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        ["definition", "by", "key", "count", "mean_s", "median_s", "p90_s", "max_s", "working_mean_s",
         "working_median_s", "working_p90_s", "working_max_s", "baseline_s", "change", "flagged", "records",
         "refused", "sendbacks", "rejections", "errors", "complaints"]
    )  # fmt: skip
    for p in found.processes:
        for s in p.steps:
            t = s.times
            writer.writerow(
                [p.definition_id, p.by, s.key, t.count, t.mean, t.median, t.p90, t.max, t.working_mean,
                 t.working_median, t.working_p90, t.working_max, s.baseline, s.change, s.flagged, s.records,
                 s.refused, s.sendbacks, s.rejections, s.errors, s.complaints]
            )  # fmt: skip
    return buffer.getvalue()


@click.group()
def baseline() -> None:
    """Baselines of the median handling time: a benchmark figure with its source, or last month's own."""


@baseline.command("set")
@click.argument("definition")
@click.argument("args", nargs=-1, required=True, metavar="[STEP] DURATION")
@click.option("--source", required=True, help='Where the figure comes from, e.g. "industry report 2026".')
def baseline_set(definition: str, args: tuple[str, ...], source: str) -> None:
    """Record a benchmark baseline for a step (or, without STEP, the whole process's cycle time). Earlier
    baselines are kept: this one becomes the current."""
    if len(args) > 2:
        raise click.UsageError(
            "give at most a STEP and a DURATION, e.g. baseline set content-review manual_review 2h"
        )
    step = args[0] if len(args) == 2 else None
    seconds = Duration().convert(args[-1], None, click.get_current_context())
    row = settings().engine().set_baseline(definition, step, seconds, source=source, actor=settings().actor())
    if settings().json:
        emit(_baseline_dict(row))
        return
    click.echo(f"baseline {row.id}: {definition} {step or '(whole process)'} {span(row.seconds)} ({source})")


@baseline.command("update")
@click.option("--month", help="The month whose own medians to record, YYYY-MM (default: last month).")
def baseline_update(month: str | None) -> None:
    """Record each process's own medians of last month as its baselines (the worker does it monthly)."""
    rows = settings().engine().update_baselines(month, actor=settings().user or "$operator")
    if settings().json:
        emit([_baseline_dict(r) for r in rows])
        return
    for r in rows:
        click.echo(
            f"baseline {r.id}: {r.definition_id} {r.step or '(whole process)'} {span(r.seconds)} ({r.source})"
        )
    click.echo(f"{len(rows)} baseline(s) recorded")


@baseline.command("list")
@click.argument("definition", required=False)
def baseline_list(definition: str | None) -> None:
    """Every baseline, oldest first; the newest per step is the current one."""
    rows = settings().engine().baselines(definition)
    if settings().json:
        emit([_baseline_dict(r) for r in rows])
        return
    click.echo(
        table(
            ["id", "definition", "step", "median", "kind", "source", "recorded", "by"],
            [
                [
                    r.id,
                    r.definition_id,
                    r.step or "(process)",
                    span(r.seconds),
                    r.kind,
                    r.source,
                    r.created_at.isoformat(timespec="seconds"),
                    r.created_by,
                ]
                for r in rows
            ],
        )
    )


def _baseline_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row.id, "definition": row.definition_id, "step": row.step or None, "seconds": row.seconds,
        "kind": row.kind, "source": row.source, "period": row.period,
        "created_at": row.created_at.isoformat(), "created_by": row.created_by,
    }  # fmt: skip


@click.command()
@click.argument("definition")
@click.argument("version1", type=VERSION)
@click.argument("version2", type=VERSION)
@click.option("--since", type=TIME, help="Only records at or after this time (e.g. when a trial began).")
@click.option("--until", type=TIME, help="Only records before this time (ISO 8601).")
def compare(
    definition: str, version1: int, version2: int, since: datetime | None, until: datetime | None
) -> None:
    """Compare two versions of a definition: cycle time and per-step handling times (medians, their ratio
    with a bootstrap interval, Mann–Whitney U), rejection and complaint rates (Fisher's exact test), and a
    plain verdict."""
    engine, viewer = settings().engine(), settings().user
    found = engine.compare(definition, version1, version2, since=since, until=until, viewer=viewer)
    if settings().json:
        emit(found.as_dict())
        return
    click.echo(_comparison(found))


def _comparison(c: Comparison) -> str:
    rows = [
        [d.step or "(cycle time)", d.n1, d.n2, span(d.median1), span(d.median2),
         "" if d.ratio is None else f"{d.ratio:.2f}",
         "" if d.ratio_ci is None else f"{d.ratio_ci[0]:.2f}–{d.ratio_ci[1]:.2f}",
         f"{d.p_value:.3g}", "yes" if d.significant else "no"]
        for d in (c.cycle, *c.steps)
    ]  # fmt: skip
    heads = ["step", f"n v{c.version1}", f"n v{c.version2}", f"median v{c.version1}",
             f"median v{c.version2}", "ratio", "95% CI", "p (U test)", "significant"]  # fmt: skip
    rates = [
        [r.name, f"{r.hits1}/{r.cases1}", f"{r.hits2}/{r.cases2}", share(r.rate1), share(r.rate2),
         f"{r.p_value:.3g}", "yes" if r.significant else "no"]
        for r in c.rates
    ]  # fmt: skip
    rate_heads = ["rate", f"v{c.version1}", f"v{c.version2}", f"rate v{c.version1}", f"rate v{c.version2}",
                  "p (Fisher)", "significant"]  # fmt: skip
    return "\n\n".join([table(heads, rows), table(rate_heads, rates), c.verdict]) + "\n"


def start_baseline_updates(stop: threading.Event) -> threading.Thread:
    """The worker's monthly baseline update (`engine.insight.baseline.MonthlyUpdate`), until `stop`."""
    from sopflow.engine.insight.baseline import MonthlyUpdate

    monthly = MonthlyUpdate(settings().engine())
    # A daemon: a worker that ends must not wait for it (an update is one transaction, whole or not at all).
    thread = threading.Thread(target=monthly.run, args=(stop,), name="sopflow-baselines", daemon=True)
    thread.start()
    return thread


COMMANDS = [report, baseline, compare]
