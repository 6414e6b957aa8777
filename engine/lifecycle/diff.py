"""What changed between two versions of a definition, in words a process owner reads: states, events,
roles, guards, deadlines and data fields added, removed or changed.

Pure: two checked definitions in, a list of changes out, in a stable order (the process's title,
states, events, guards, roles, deadlines, data fields; by name). `sopflow defs diff` prints it and
`sopflow diagram --diff` colours the states it names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sopflow.engine.audit import canonical_json
from sopflow.engine.definition.model import (
    Deadline,
    Definition,
    Parallel,
    ParallelBranch,
    State,
    Transition,
    thawed_json,
)

Kind = Literal["added", "removed", "changed"]
Subject = Literal["process", "state", "event", "guard", "role", "deadline", "field"]


@dataclass(frozen=True, slots=True)
class Change:
    """One difference: what kind of thing (`subject`), which one (`name`), and what happened to it."""

    kind: Kind
    subject: Subject
    name: str
    words: str
    state: str | None = None
    """The state it belongs to (an event, a guard, the state itself), for a diagram to colour."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "subject": self.subject,
            "name": self.name,
            "state": self.state,
            "words": self.words,
        }


@dataclass(frozen=True, slots=True)
class Diff:
    definition_id: str
    old_version: int
    new_version: int
    changes: tuple[Change, ...]

    def marked_states(self) -> dict[str, Kind]:
        """Each state of either version that changed, and how: added, removed, or changed (itself, or an
        event or guard of it)."""
        marks: dict[str, Kind] = {}
        for c in self.changes:
            if c.subject == "state":
                marks[c.name] = c.kind
            elif c.state is not None:
                marks.setdefault(c.state, "changed")
        return marks

    def as_dict(self) -> dict[str, Any]:
        return {
            "definition": self.definition_id,
            "from": self.old_version,
            "to": self.new_version,
            "changes": [c.as_dict() for c in self.changes],
        }


def diff(old: Definition, new: Definition) -> Diff:
    """The changes from `old` to `new` (see the module)."""
    changes: list[Change] = []
    if (old.title.zh, old.title.en) != (new.title.zh, new.title.en):
        changes.append(
            Change(
                "changed", "process", new.id, f"the process is now called {_title(new)} (was {_title(old)})"
            )
        )
    changes += _states(old, new)
    changes += _events(old, new)
    changes += _roles(old, new)
    changes += _deadlines(old, new)
    changes += _fields(old.data_schema, new.data_schema)
    return Diff(new.id, old.version, new.version, tuple(changes))


def _title(definition: Definition) -> str:
    return " / ".join(f"“{t}”" for t in dict.fromkeys((definition.title.zh, definition.title.en)) if t)


def _states(old: Definition, new: Definition) -> list[Change]:
    out: list[Change] = []
    for name in sorted(set(old.states) | set(new.states)):
        a, b = old.states.get(name), new.states.get(name)
        if a is None and b is not None:
            out.append(Change("added", "state", name, f"new state `{name}` ({_describe(b)})", name))
        elif b is None and a is not None:
            out.append(
                Change("removed", "state", name, f"state `{name}` is gone (it was {_describe(a)})", name)
            )
        elif a is not None and b is not None:
            out += [
                Change("changed", "state", name, f"state `{name}`: {w}", name) for w in _state_words(a, b)
            ]
    if old.initial != new.initial:
        out.append(
            Change(
                "changed", "state", new.initial, f"cases now begin in `{new.initial}`, not `{old.initial}`"
            )
        )
    return out


def _describe(state: State) -> str:
    if state.final:
        return "a final state"
    if state.is_choice:
        return "a choice"
    if state.approval is not None:
        return f"an approval by {', '.join(state.approval.roles)}"
    owner = f"owned by {state.owner}" if state.owner else "without an owner"
    return owner + (f", times out after {_span(state.timeout.after_seconds)}" if state.timeout else "")


def _state_words(a: State, b: State) -> list[str]:
    words: list[str] = []
    if a.owner != b.owner:
        words.append(f"its owner is now {b.owner or 'nobody'} (was {a.owner or 'nobody'})")
    if a.final != b.final:
        words.append("it is now final" if b.final else "it is no longer final")
    at, bt = a.timeout, b.timeout
    if (at and (at.after_seconds, at.fire)) != (bt and (bt.after_seconds, bt.fire)):
        if bt is None:
            words.append("it no longer times out")
        elif at is None:
            words.append(f"it now times out after {_span(bt.after_seconds)} (firing `{bt.fire}`)")
        else:
            words.append(
                f"it times out after {_span(bt.after_seconds)} firing `{bt.fire}` "
                f"(was {_span(at.after_seconds)} firing `{at.fire}`)"
            )
    aa, ba = a.assign, b.assign
    if (aa and (aa.kind, aa.value)) != (ba and (ba.kind, ba.value)):
        words.append(f"its work goes {_assign(ba)} (was {_assign(aa)})")
    ap, bp = a.approval, b.approval
    if (ap and (ap.rule, ap.roles, ap.at_least)) != (bp and (bp.rule, bp.roles, bp.at_least)):
        words.append(f"its approval is now {_approval(bp)} (was {_approval(ap)})")
    if [(x.when and x.when.text, x.target) for x in a.choice] != [
        (x.when and x.when.text, x.target) for x in b.choice
    ]:
        words.append("its choice routes differently")
    return words + _parallel_words(a.parallel, b.parallel)


def _parallel_words(a: Parallel | None, b: Parallel | None) -> list[str]:
    """A parallel state's branches added, removed or changed, and its join."""
    if a is None and b is None:
        return []
    if a is None or b is None:
        return ["it now splits into branches" if a is None else "it no longer splits into branches"]
    words: list[str] = []
    for name in sorted(set(a.branches) | set(b.branches)):
        ba, bb = a.branches.get(name), b.branches.get(name)
        if ba is None:
            words.append(f"new branch `{name}`")
        elif bb is None:
            words.append(f"branch `{name}` is gone")
        elif _branch(ba) != _branch(bb):
            words.append(f"branch `{name}` works differently")
    if (a.for_each and _branch(a.template)) != (b.for_each and _branch(b.template)):
        words.append("its one-task-per-item branches changed")
    join_a, join_b = _join(a), _join(b)
    if join_a != join_b:
        words.append(f"its join is now {join_b} (was {join_a})")
    if a.then != b.then:
        words.append(f"its join now goes to `{b.then}` (was `{a.then}`)")
    return words


def _join(p: Parallel) -> str:
    rule = {"first": "the first branch", "all": "all branches"}.get(p.join, p.join)
    if p.join == "at_least":
        rule = f"at least {p.at_least} branches"
    elif p.join == "share":
        rule = f"a share of {p.share:g} of the branches"
    return rule + (", the others running on" if p.remaining == "finish" else "")


def _branch(branch: ParallelBranch | None) -> Any:
    """What a branch does, without where it is written."""
    if branch is None:
        return None
    return (
        branch.initial,
        sorted(
            (
                name,
                s.owner,
                s.final,
                s.assign and (s.assign.kind, s.assign.value),
                sorted(
                    (t.event, t.target, t.by, _schema(t.payload), t.when and t.when.text)
                    for t in s.transitions
                ),
            )
            for name, s in branch.states.items()
        ),
    )


def _assign(assign: Any) -> str:
    return "to nobody in particular" if assign is None else f"{assign.kind.replace('_', ' ')} {assign.value}"


def _approval(approval: Any) -> str:
    if approval is None:
        return "none"
    if approval.rule == "quorum":
        return f"a quorum of {approval.at_least} {approval.roles[0]}"
    return f"{approval.rule.replace('_', ' ')} {', '.join(approval.roles)}"


def _events(old: Definition, new: Definition) -> list[Change]:
    out: list[Change] = []
    for name in sorted(set(old.states) & set(new.states)):
        a = _by_event(old.states[name].transitions)
        b = _by_event(new.states[name].transitions)
        for event in sorted(set(a) | set(b)):
            where = f"`{event}` in `{name}`"
            ta, tb = a.get(event), b.get(event)
            if ta is None and tb is not None:
                out.append(
                    Change("added", "event", event, f"new event {where}: to `{tb.target}` by {_by(tb)}", name)
                )
            elif tb is None and ta is not None:
                out.append(Change("removed", "event", event, f"event {where} is gone", name))
            elif ta is not None and tb is not None:
                if ta.target != tb.target:
                    out.append(
                        Change(
                            "changed",
                            "event",
                            event,
                            f"{where} now goes to `{tb.target}` (was `{ta.target}`)",
                            name,
                        )
                    )
                if _schema(ta.payload) != _schema(tb.payload):
                    out += [
                        Change("changed", "event", event, f"{where}: the payload's {c.words}", name)
                        for c in _fields(ta.payload or {}, tb.payload or {}, noun="field")
                    ] or [Change("changed", "event", event, f"{where}: its payload has new rules", name)]
                if ta.by != tb.by:
                    out.append(
                        Change(
                            "changed",
                            "event",
                            event,
                            f"{where} is now fired by {_by(tb)} (was {_by(ta)})",
                            name,
                        )
                    )
                ga, gb = ta.when and ta.when.text, tb.when and tb.when.text
                if ga != gb:
                    kind: Kind = "added" if ga is None else "removed" if gb is None else "changed"
                    text = {
                        "added": f"{where} now needs `{gb}`",
                        "removed": f"{where} no longer needs `{ga}`",
                        "changed": f"{where} now needs `{gb}` (was `{ga}`)",
                    }[kind]
                    out.append(Change(kind, "guard", event, text, name))
    return out


def _by_event(transitions: tuple[Transition, ...]) -> dict[str, Transition]:
    found: dict[str, Transition] = {}
    for t in transitions:
        found.setdefault(t.event, t)
    return found


def _by(t: Transition) -> str:
    return ", ".join(t.by) or "anyone"


def _roles(old: Definition, new: Definition) -> list[Change]:
    a, b = old.roles(), new.roles()
    out = [Change("added", "role", r, f"role `{r}` now takes part") for r in sorted(b - a)]
    out += [Change("removed", "role", r, f"role `{r}` no longer takes part") for r in sorted(a - b)]
    return out


def _deadlines(old: Definition, new: Definition) -> list[Change]:
    a = {d.name: d for d in old.deadlines}
    b = {d.name: d for d in new.deadlines}
    out: list[Change] = []
    for name in sorted(set(a) | set(b)):
        da, db = a.get(name), b.get(name)
        if da is None and db is not None:
            out.append(Change("added", "deadline", name, f"new deadline `{name}`: {_promise(db)}"))
        elif db is None and da is not None:
            out.append(
                Change("removed", "deadline", name, f"deadline `{name}` is gone (it was {_promise(da)})")
            )
        elif da is not None and db is not None and _promise(da) != _promise(db):
            out.append(
                Change("changed", "deadline", name, f"deadline `{name}`: {_promise(db)} (was {_promise(da)})")
            )
        elif da is not None and db is not None and da.escalate != db.escalate:
            out.append(Change("changed", "deadline", name, f"deadline `{name}` escalates differently"))
    return out


def _promise(d: Deadline) -> str:
    time = "working time" if d.calendar == "working" else ""
    within = f"{_span(d.within_seconds)}{' of ' + time if time else ''}"
    return f"from `{d.start}` to {' or '.join(f'`{u}`' for u in d.until)} within {within}"


def _fields(old: Mapping[str, Any], new: Mapping[str, Any], noun: str = "data field") -> list[Change]:
    a = dict(old.get("properties", {}) or {})
    b = dict(new.get("properties", {}) or {})
    ra, rb = set(old.get("required", ()) or ()), set(new.get("required", ()) or ())
    out: list[Change] = []
    for name in sorted(set(a) | set(b)):
        if name not in a:
            need = "required" if name in rb else "optional"
            out.append(Change("added", "field", name, f"new {need} {noun} `{name}` ({_type(b[name])})"))
        elif name not in b:
            out.append(Change("removed", "field", name, f"{noun} `{name}` is gone"))
        else:
            if _type(a[name]) != _type(b[name]) or dict(a[name]) != dict(b[name]):
                out.append(
                    Change("changed", "field", name, f"{noun} `{name}` is now {_type(b[name])} "
                           f"(was {_type(a[name])})" if _type(a[name]) != _type(b[name])
                           else f"{noun} `{name}` has new rules")
                )  # fmt: skip
            if (name in ra) != (name in rb):
                now = "required" if name in rb else "optional"
                out.append(Change("changed", "field", name, f"{noun} `{name}` is now {now}"))
    return out


def _type(schema: Any) -> str:
    if not isinstance(schema, Mapping):
        return "any value"
    kind = schema.get("type", "any value")
    if "enum" in schema:
        return "one of " + ", ".join(str(v) for v in schema["enum"])
    return kind if isinstance(kind, str) else " or ".join(str(k) for k in kind)


def _schema(schema: Mapping[str, Any] | None) -> str:
    return canonical_json(thawed_json(schema or {}))


def _span(seconds: int) -> str:
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
