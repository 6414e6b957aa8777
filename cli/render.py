"""Output for people: aligned tables (Chinese characters count double), durations, and flow charts in
Mermaid or Graphviz dot with each step's owner and output (002 §三(一)2)."""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sopflow.engine.definition.model import Definition, State, Text


def shipped_definitions() -> Path:
    """The folder of seed definitions installed with sopflow (the `definitions` data package)."""
    import importlib.util

    spec = importlib.util.find_spec("sopflow.definitions")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the seed definitions are not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def width(text: str) -> int:
    """Display width in a terminal: wide (CJK) characters take two columns."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(ch: str) -> str:
    code = ord(ch)
    return _NAMED.get(ch) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def _harmful(ch: str) -> bool:
    """A character a terminal acts on instead of showing: C0 and C1 controls (ESC starts colour changes,
    title rewrites, cursor moves), DEL, bidirectional overrides that reorder what follows, and the line
    and paragraph separators."""
    code = ord(ch)
    return code < 0x20 or 0x7F <= code <= 0x9F or ch in _BIDI or code in (0x2028, 0x2029)


def safe(value: str, limit: int | None = None) -> str:
    """People's text as a terminal should show it: each control character written as an escape (`\\x1b`,
    `\\n`), and, given a `limit` of columns, cut there with `…`. `--json` output is never passed here."""
    if any(_harmful(ch) for ch in value):
        value = "".join(_escape(ch) if _harmful(ch) else ch for ch in value)
    if limit is not None and width(value) > limit:
        kept: list[str] = []
        used = 0
        for ch in value:
            used += width(ch)
            if used > limit - 1:
                break
            kept.append(ch)
        value = "".join(kept) + "…"
    return value


_LONG_QUOTE = re.compile("`([^`\n]{201,})`")


def short_quotes(value: str) -> str:
    """A message with each quoted name over 200 characters (a long file path still fits) cut to its start
    and its length: a 100,000-character user id or event name typed by mistake is named, not echoed."""
    return _LONG_QUOTE.sub(lambda m: f"`{m.group(1)[:40]}…` ({len(m.group(1))} characters)", value)


def safe_lines(value: str) -> str:
    """`safe` for text whose own line breaks are meant (a message, an indented JSON block)."""
    return "\n".join(safe(line) for line in value.split("\n"))


def table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], *, limits: Mapping[int, int] | None = None
) -> str:
    """Aligned columns, one line per row: every cell passes through `safe`, and a column named in
    `limits` (index → columns) is cut to that width."""
    cut = limits or {}
    cells = [[str(h) for h in headers]] + [
        ["" if c is None else safe(str(c), cut.get(i)) for i, c in enumerate(row)] for row in rows
    ]
    widths = [max(width(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        line = "  ".join(c + " " * (widths[i] - width(c)) for i, c in enumerate(row)).rstrip()
        lines.append(line)
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def text(value: Text | None) -> str:
    if value is None:
        return ""
    if value.zh and value.en:
        return f"{value.zh} / {value.en}"
    return value.zh or value.en or ""


def ago(moment: datetime, now: datetime) -> str:
    return duration(now - moment)


def duration(span: timedelta) -> str:
    """A span as `2d3h`, `3h05m` or `12m`; a negative span (a time still to come) with a leading `-`."""
    if span < timedelta(0):
        return "-" + duration(-span)
    seconds = int(span.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m"


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


# -- flow charts --------------------------------------------------------------------------------------


_ASSIGN_WORDS = {
    "claim": "assign: claimed by {}",
    "least_loaded": "assign: least loaded {}",
    "from_data": "assign: the person in data.{}",
    "fired_by": "assign: who fired {}",
}


def _control(definition: Definition) -> str | None:
    """Who may act on a whole case (besides administrators), for a chart's comment."""
    control = definition.control
    if control is None:
        return None
    parts = [
        f"{act} by {', '.join(roles)}"
        for act, roles in (("cancel", control.cancel), ("suspend", control.suspend))
        if roles
    ]
    return "control: " + "; ".join(parts) + " (and administrators)" if parts else None


def _label(state: State) -> list[str]:
    lines = [state.title.zh or "", state.title.en or ""]
    if state.owner:
        lines.append(f"owner: {state.owner}")
    if state.output:
        lines.append(f"output: {text(state.output)}")
    if state.approval:
        a = state.approval
        rule = (
            f"quorum {a.at_least} of {a.roles[0]}"
            if a.rule == "quorum"
            else f"{'all of' if a.rule == 'all_of' else 'any of'} {', '.join(a.roles)}"
        )
        lines.append(f"approval: {rule}" + (f", not by {', '.join(a.not_by)}" if a.not_by else ""))
    if state.assign:
        lines.append(_ASSIGN_WORDS[state.assign.kind].format(state.assign.value))
    if state.subprocess:
        lines.append(f"sub-process: {state.subprocess.definition}")
    if state.parallel:
        # Each branch on a line of its own: its steps in order, each with its owner.
        for branch in state.parallel.branches.values():
            steps = " → ".join(_branch_step(s) for s in branch.states.values())
            lines.append(f"branch {branch.name}: {steps}")
        template = state.parallel.template
        if template is not None:
            steps = " → ".join(_branch_step(s) for s in template.states.values())
            lines.append(f"for each of {state.parallel.for_each}: {steps}")
    return [line for line in lines if line]


def _branch_step(state: State) -> str:
    """A branch's step on its line: its name, owner and how its work is given (`pack (packer; least
    loaded packer)`)."""
    given = _ASSIGN_WORDS[state.assign.kind].format(state.assign.value)[8:] if state.assign else None
    said = "; ".join(x for x in (state.owner, given) if x)
    return state.name + (f" ({said})" if said else "")


def _edges(definition: Definition) -> list[tuple[str, str, str]]:
    edges: list[tuple[str, str, str]] = []
    for state in definition.states.values():
        for t in state.transitions:
            label = t.event + (f" [{t.when.text}]" if t.when else "")
            # Who may not fire it and whether only the clock does are part of the rule the chart shows.
            label += " (clock only)" if t.clock_only else ""
            label += f" not by {', '.join(t.not_by)}" if t.not_by else ""
            # A loop back to its own state either stays (nothing of the state starts again) or re-enters.
            label += " (re-enters)" if t.reenter else " (stays)" if t.stays else ""
            edges.append((state.name, t.target, label))
        for b in state.choice:
            edges.append((state.name, b.target, b.when.text if b.when else "else"))
        if state.approval:
            edges.append((state.name, state.approval.approved, "approved"))
            edges.append((state.name, state.approval.rejected, "rejected"))
        if state.subprocess:
            for outcome, target in state.subprocess.on.items():
                edges.append((state.name, target, f"{state.subprocess.definition} {outcome}"))
        if state.parallel:
            p = state.parallel
            rule = {"at_least": f"at least {p.at_least}", "share": f"{p.share:.0%}"}.get(p.join, p.join)
            of = f"the {p.for_each}" if p.for_each else f"{len(p.branches)} branches"
            rest = ", the rest finish" if p.remaining == "finish" else ""
            edges.append((state.name, p.then, f"join: {rule} of {of}{rest}"))
    return edges


def mermaid(definition: Definition, path: Sequence[str] = (), current: str | None = None) -> str:
    """A Mermaid flowchart; `path` (states a case went through) and `current` are highlighted."""
    out = ["flowchart TD", f"  %% {definition.key}: {text(definition.title)}"]
    if _control(definition):
        out.append(f"  %% {_control(definition)}")
    for name, state in definition.states.items():
        label = "<br/>".join(_mermaid_escape(line) for line in _label(state))
        if state.is_choice:
            out.append(f'  {name}{{"{label}"}}')
        elif state.final:
            out.append(f'  {name}(["{label}"])')
        else:
            out.append(f'  {name}["{label}"]')
    started = _start_label(definition)
    arrow = f'-->|"{_mermaid_escape(started)}"|' if started else "-->"
    out.append(f"  start((start)) {arrow} {definition.initial}")
    for source, target, label in _edges(definition):
        out.append(f'  {source} -->|"{_mermaid_escape(label)}"| {target}')
    if path:
        out.append("  classDef visited fill:#dbeafe,stroke:#1d4ed8")
        out.append(f"  class {','.join(dict.fromkeys(path))} visited")
    if current:
        out.append("  classDef current fill:#fde68a,stroke:#b45309,stroke-width:3px")
        out.append(f"  class {current} current")
    return "\n".join(out)


def _start_label(definition: Definition) -> str:
    """Who may start a case and on what condition (`start:`), and the schedules that start one; "" when
    anyone may and nothing starts one by itself."""
    rule = definition.start
    parts = [f"by {', '.join(rule.by)}"] if rule is not None and rule.by else []
    parts += [f"[{rule.when.text}]"] if rule is not None and rule.when else []
    for s in definition.schedules:
        moved = "" if s.working_day == "any" else f", {s.working_day} working day"
        parts.append(f"schedule {s.name}: {s.cron}{moved}")
    return " ".join(parts)


def _mermaid_escape(value: str) -> str:
    return value.replace('"', "#quot;").replace("|", "#124;")


def dot(definition: Definition, path: Sequence[str] = (), current: str | None = None) -> str:
    """A Graphviz dot digraph; `path` and `current` are highlighted."""
    visited = set(path)
    out = [f"digraph {_dot_id(definition.id)} {{", "  rankdir=TB;", '  node [fontname="sans-serif"];']
    out.append(f"  label={_dot_id(definition.key + ': ' + text(definition.title))};")
    if _control(definition):
        out.append(f"  // {_control(definition)}")
    out.append('  "__start" [shape=point];')
    for name, state in definition.states.items():
        shape = "diamond" if state.is_choice else "doubleoctagon" if state.final else "box"
        attrs = [f"shape={shape}", f"label={_dot_id(chr(10).join(_label(state)))}"]
        if name == current:
            attrs.append('style=filled fillcolor="#fde68a" penwidth=3')
        elif name in visited:
            attrs.append('style=filled fillcolor="#dbeafe"')
        out.append(f"  {_dot_id(name)} [{' '.join(attrs)}];")
    started = _start_label(definition)
    label = f" [label={_dot_id(started)}]" if started else ""
    out.append(f'  "__start" -> {_dot_id(definition.initial)}{label};')
    for source, target, label in _edges(definition):
        out.append(f"  {_dot_id(source)} -> {_dot_id(target)} [label={_dot_id(label)}];")
    out.append("}")
    return "\n".join(out)


def _dot_id(value: str) -> str:
    """A quoted dot string: JSON's quoting (its escaped quote and newline mean the same in dot), with
    Chinese kept as UTF-8 text, because dot has no unicode escapes and would print them literally."""
    return json.dumps(value, ensure_ascii=False)
