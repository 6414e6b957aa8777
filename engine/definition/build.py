"""Turn a schema-valid document into the frozen model (`Definition`, `Org`).

The JSON Schema has already checked the shape, so this module only translates: texts into `Text`,
durations into seconds, shorthands into their long form (`until: done` → `("done",)`, a missing `by`
→ the state's owner). What the schema cannot check (a duration like "4x") must not crash here: it is
stored as 0 and `semantic` reports it, reading the original text from the document.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any, TypeVar, cast

from sopflow.engine.definition.loader import Document
from sopflow.engine.definition.model import (
    AUTOMATIC_DONE,
    AUTOMATIC_FAILED,
    SYSTEM,
    Approval,
    ApprovalRule,
    AssignKind,
    Assignment,
    Automatic,
    Branch,
    Calendar,
    Control,
    Deadline,
    Definition,
    Escalation,
    EscalationAction,
    Expression,
    Grant,
    Measures,
    Org,
    Parallel,
    ParallelBranch,
    Path,
    Role,
    Schedule,
    StartRule,
    State,
    Subprocess,
    Text,
    Timeout,
    Transition,
    User,
    WorkingCalendar,
    frozen_json,
)

_DURATION = re.compile(r"(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_UNIT_SECONDS = (7 * 86400, 86400, 3600, 60, 1)
# A pattern, not compiled here: compiling its 28,000-character class takes ~2 ms, and only a definition
# with a plain-string text needs it (`re` compiles it on first use and keeps it).
_CJK = r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]"
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_ESCALATION_ACTIONS: tuple[EscalationAction, ...] = ("notify", "reassign", "fire")
_APPROVAL_RULES: tuple[ApprovalRule, ...] = ("all_of", "any_of", "quorum")
_ASSIGN_KINDS: tuple[AssignKind, ...] = ("from_data", "least_loaded", "claim", "fired_by", "round_robin")

_K = TypeVar("_K", bound=str)


def _first_key(raw: Mapping[str, Any], keys: tuple[_K, ...]) -> _K:
    """The first of `keys` present in `raw` (the schema asks for one; the first wins, else the first key)."""
    return next((k for k in keys if k in raw), keys[0])


def parse_duration(text: str) -> int | None:
    """Seconds in a duration like 4h, 30m, 1h30m, 2d, 1w, 45s (units largest first); None if malformed."""
    match = _DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None or not any(match.groups()):
        return None
    return sum(int(n) * unit for n, unit in zip(match.groups(), _UNIT_SECONDS, strict=True) if n)


def content_hash(data: Any) -> str:
    """SHA-256 hex of the data in canonical JSON: comments, key order and layout do not change it."""
    canonical = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def build_text(value: Any) -> Text:
    """A plain string is Chinese if it has CJK characters, else English; a mapping names both."""
    if isinstance(value, str):
        return Text(zh=value) if re.search(_CJK, value) else Text(en=value)
    if isinstance(value, Mapping):
        return Text(zh=value.get("zh"), en=value.get("en"))
    return Text(en=str(value))


def _optional_text(raw: Mapping[str, Any], key: str) -> Text | None:
    return build_text(raw[key]) if key in raw else None


def _seconds(value: Any) -> int:
    # A malformed duration becomes 0; semantic reports it as bad-duration from the document's text.
    return (parse_duration(value) if isinstance(value, str) else None) or 0


def build_definition(doc: Document) -> Definition:
    """The `Definition` a schema-valid document describes."""
    data: Mapping[str, Any] = doc.data
    states = {name: _build_state(name, raw, ("states", name)) for name, raw in data.get("states", {}).items()}
    deadlines = tuple(
        _build_deadline(raw, ("deadlines", i)) for i, raw in enumerate(data.get("deadlines", []))
    )
    return Definition(
        id=data["id"],
        version=data["version"],
        title=build_text(data["title"]),
        initial=data["initial"],
        states=MappingProxyType(states),
        content_hash=content_hash(data),
        file=doc.file,
        description=_optional_text(data, "description"),
        rulebook=data.get("source"),
        data_schema=frozen_json(data.get("data", {"type": "object"})),
        deadlines=deadlines,
        assumptions=tuple(build_text(a) for a in data.get("assumptions", [])),
        schedules=tuple(
            _build_schedule(name, raw, ("schedules", name)) for name, raw in data.get("schedules", {}).items()
        ),
        start=_build_start(data["start"], ("start",)) if "start" in data else None,
        control=Control(
            ("control",),
            cancel=tuple(data["control"].get("cancel", ())),
            suspend=tuple(data["control"].get("suspend", ())),
        )
        if "control" in data
        else None,
        measures=_build_measures(data["measures"], ("measures",)) if "measures" in data else None,
    )


def _build_measures(raw: Mapping[str, Any], path: Path) -> Measures:
    satisfaction = raw.get("satisfaction", {})
    threshold = str(raw.get("threshold", "10%")).rstrip("%")
    return Measures(
        path=path,
        errors=tuple(raw.get("errors", ())),
        complaints=tuple(raw.get("complaints", ())),
        satisfaction_field=satisfaction.get("field"),
        satisfaction_scale=satisfaction.get("scale", "csat"),
        threshold=float(threshold) / 100,
    )


def _build_start(raw: Mapping[str, Any], path: Path) -> StartRule:
    return StartRule(
        path=path,
        by=tuple(raw.get("by", ())),
        when=Expression(raw["when"], (*path, "when")) if "when" in raw else None,
        explain=_optional_text(raw, "explain"),
    )


def _build_compute(raw: Mapping[str, Any], path: Path) -> Mapping[str, Expression]:
    return MappingProxyType(
        {name: Expression(text, (*path, "compute", name)) for name, text in raw.get("compute", {}).items()}
    )


def _build_state(name: str, raw: Mapping[str, Any], path: Path) -> State:
    owner = raw.get("owner")
    default_by = (owner,) if owner else ()
    transitions: list[Transition] = []
    for event, spec in raw.get("on", {}).items():
        if isinstance(spec, list):
            transitions += [
                _build_transition(event, name, alt, (*path, "on", event, i), default_by)
                for i, alt in enumerate(spec)
            ]
        else:
            transitions.append(_build_transition(event, name, spec, (*path, "on", event), default_by))
    state = State(
        name=name,
        title=build_text(raw["title"]),
        path=path,
        owner=owner,
        output=_optional_text(raw, "output"),
        instructions=_optional_text(raw, "instructions"),
        final=raw.get("final") is True,
        transitions=tuple(transitions),
        choice=tuple(_build_branch(b, (*path, "choice", i)) for i, b in enumerate(raw.get("choice", []))),
        approval=_build_approval(raw["approval"], (*path, "approval")) if "approval" in raw else None,
        assign=_build_assignment(raw["assign"], (*path, "assign")) if "assign" in raw else None,
        timeout=_build_timeout(raw["timeout"], (*path, "timeout")) if "timeout" in raw else None,
        rulebook=raw.get("source"),
        subprocess=(
            _build_subprocess(raw["subprocess"], (*path, "subprocess")) if "subprocess" in raw else None
        ),
        parallel=_build_parallel(raw["parallel"], (*path, "parallel")) if "parallel" in raw else None,
    )
    if "automatic" in raw:
        state = _with_automatic(state, raw["automatic"], (*path, "automatic"))
    return state


def _with_automatic(state: State, raw: Mapping[str, Any], path: Path) -> State:
    """An automatic state: its work's two outcomes are events only the system fires (the answer copied
    into the data, or the error), and a timeout due at once has the worker do the work."""
    automatic = Automatic(
        then=raw["then"],
        on_error=raw["on_error"],
        path=path,
        handler=raw.get("handler"),
        webhook=raw.get("webhook"),
        retries=int(raw.get("retries", 2)),
        out=MappingProxyType(dict(raw.get("out", {}))),
        error_field=raw.get("error_field"),
    )
    done = Transition(
        event=AUTOMATIC_DONE,
        source=state.name,
        target=automatic.then,
        by=(SYSTEM,),
        path=(*path, "then"),
        copy=MappingProxyType({name: name for name in automatic.out}),
    )
    failed = Transition(
        event=AUTOMATIC_FAILED,
        source=state.name,
        target=automatic.on_error,
        by=(SYSTEM,),
        path=(*path, "on_error"),
        copy=MappingProxyType({automatic.error_field: "error"} if automatic.error_field else {}),
    )
    return replace(
        state,
        automatic=automatic,
        transitions=(*state.transitions, done, failed),
        timeout=state.timeout or Timeout(0, AUTOMATIC_DONE, path),
    )


def _build_branch_spec(name: str, spec: Mapping[str, Any], path: Path) -> ParallelBranch:
    return ParallelBranch(
        name=name,
        title=build_text(spec["title"]),
        initial=spec["initial"],
        states=MappingProxyType(
            {
                state: _build_state(state, sub, (*path, "states", state))
                for state, sub in spec["states"].items()
            }
        ),
        path=path,
    )


def _build_parallel(raw: Mapping[str, Any], path: Path) -> Parallel:
    join = raw.get("join", "all")
    branches = {
        name: _build_branch_spec(name, spec, (*path, "branches", name))
        for name, spec in raw.get("branches", {}).items()
    }
    rule = next(iter(join)) if isinstance(join, Mapping) else join
    return Parallel(
        branches=MappingProxyType(branches),
        then=raw["then"],
        path=path,
        join=rule,
        at_least=int(join["at_least"]) if rule == "at_least" else 1,
        share=float(join["share"]) if rule == "share" else 1.0,
        for_each=raw.get("for_each"),
        template=_build_branch_spec("*", raw["branch"], (*path, "branch")) if "branch" in raw else None,
        collect=raw.get("collect"),
        remaining="finish" if raw.get("remaining") == "finish" else "cancel",
    )


def _build_subprocess(raw: Mapping[str, Any], path: Path) -> Subprocess:
    return Subprocess(
        definition=raw["definition"],
        on=MappingProxyType(dict(raw.get("on", {}))),
        path=path,
        inputs=MappingProxyType(dict(raw.get("in", {}))),
        outputs=MappingProxyType(dict(raw.get("out", {}))),
    )


def _build_transition(
    event: str, source: str, raw: Mapping[str, Any], path: Path, default_by: tuple[str, ...]
) -> Transition:
    return Transition(
        event=event,
        source=source,
        target=raw["to"],
        by=tuple(raw["by"]) if "by" in raw else default_by,
        path=path,
        when=Expression(raw["when"], (*path, "when")) if "when" in raw else None,
        explain=_optional_text(raw, "explain"),
        payload=frozen_json(raw["payload"]) if "payload" in raw else None,
        set=frozen_json(raw.get("set", {})),
        copy=frozen_json(raw.get("copy", {})),
        title=_optional_text(raw, "title"),
        rulebook=raw.get("source"),
        not_by=tuple(raw.get("not_by", ())),
        compute=_build_compute(raw, path),
        reenter=bool(raw.get("reenter", False)),
    )


def _build_branch(raw: Mapping[str, Any], path: Path) -> Branch:
    # The `else` branch is the one without a guard; the schema makes a branch either {when, to} or {else}.
    if "else" in raw:
        return Branch(target=raw["else"], path=path)
    return Branch(target=raw["to"], path=path, when=Expression(raw["when"], (*path, "when")))


def _build_approval(raw: Mapping[str, Any], path: Path) -> Approval:
    rule = _first_key(raw, _APPROVAL_RULES)
    at_least = 1
    if rule == "quorum":
        roles: tuple[str, ...] = (raw["quorum"]["role"],)
        at_least = raw["quorum"]["at_least"]
    else:
        roles = tuple(raw.get(rule, ()))
    return Approval(
        rule=rule,
        roles=roles,
        approved=raw["approved"],
        rejected=raw["rejected"],
        path=path,
        at_least=at_least,
        veto=raw.get("veto", True),
        submitter_may_approve=raw.get("submitter_may_approve", False),
        not_by=tuple(raw.get("not_by", ())),
        payload=frozen_json(raw["payload"]) if "payload" in raw else None,
        set=frozen_json(raw.get("set", {})),
        copy=frozen_json(raw.get("copy", {})),
        compute=_build_compute(raw, path),
    )


def _build_assignment(raw: Mapping[str, Any], path: Path) -> Assignment:
    kind = _first_key(raw, _ASSIGN_KINDS)
    return Assignment(kind=kind, value=str(raw.get(kind, "")), path=path, not_by=tuple(raw.get("not_by", ())))


def _build_timeout(raw: Mapping[str, Any], path: Path) -> Timeout:
    notify = raw.get("notify", ())
    return Timeout(
        after_seconds=_seconds(raw["after"]),
        fire=raw["fire"],
        path=path,
        notify=(notify,) if isinstance(notify, str) else tuple(notify),
    )


def _build_schedule(name: str, raw: Mapping[str, Any], path: Path) -> Schedule:
    return Schedule(
        name=name,
        cron=raw["cron"],
        path=path,
        title=_optional_text(raw, "title"),
        working_day=raw.get("working_day", "any"),
        data=frozen_json(raw.get("data", {})),
        period_field=raw.get("period_field", "period"),
        rulebook=raw.get("source"),
        period_format=raw.get("period_format"),
    )


def _build_deadline(raw: Mapping[str, Any], path: Path) -> Deadline:
    until = raw["until"]
    return Deadline(
        name=raw["name"],
        start=raw["from"],
        until=(until,) if isinstance(until, str) else tuple(until),
        within_seconds=_seconds(raw["within"]),
        path=path,
        title=_optional_text(raw, "title"),
        calendar=cast(Calendar, raw.get("calendar", "wall")),
        escalate=tuple(
            _build_escalation(e, (*path, "escalate", i)) for i, e in enumerate(raw.get("escalate", []))
        ),
        rulebook=raw.get("source"),
        restart=raw.get("restart", "never"),
        branch=raw.get("branch"),
    )


def _build_escalation(raw: Mapping[str, Any], path: Path) -> Escalation:
    # The schema only asks for one key; a rung naming no action (or several) keeps the first and
    # semantic reports it as bad-escalation.
    action = _first_key(raw, _ESCALATION_ACTIONS)
    return Escalation(
        after_seconds=_seconds(raw.get("after", "0s")),
        action=action,
        target=str(raw.get(action, "")),
        path=path,
        counted_from=raw.get("from", "breach"),
    )


def build_org(doc: Document) -> Org:
    """The `Org` a schema-valid org document describes."""
    data: Mapping[str, Any] = doc.data
    roles = {name: _build_role(name, raw, ("roles", name)) for name, raw in data.get("roles", {}).items()}
    users = {uid: _build_user(uid, raw, ("users", uid)) for uid, raw in data.get("users", {}).items()}
    departments = {name: build_text(raw["title"]) for name, raw in data.get("departments", {}).items()}
    return Org(
        id=data["id"],
        title=build_text(data["title"]),
        roles=MappingProxyType(roles),
        users=MappingProxyType(users),
        content_hash=content_hash(data),
        file=doc.file,
        departments=MappingProxyType(departments),
        calendar=_build_calendar(data.get("calendar", {})),
        access=_build_access(data["access"]) if "access" in data else None,
    )


def _build_access(raw: Mapping[str, Any]) -> tuple[Grant, ...]:
    return tuple(
        Grant(
            role=role,
            actions=tuple(grant["actions"]),
            scope=grant.get("scope", "own"),
            definitions=tuple(grant["definitions"]) if "definitions" in grant else None,
            path=("access", role, i),
        )
        for role, grants in raw.items()
        for i, grant in enumerate(grants)
    )


def _build_role(name: str, raw: Mapping[str, Any], path: Path) -> Role:
    return Role(
        name=name,
        title=build_text(raw["title"]),
        path=path,
        department=raw.get("department"),
        manager=raw.get("manager"),
        administrator=raw.get("administrator", False),
        rulebook=raw.get("source"),
        wip_limit=raw.get("wip_limit"),
    )


def _build_user(uid: str, raw: Mapping[str, Any], path: Path) -> User:
    return User(
        id=uid,
        name=raw["name"],
        roles=tuple(raw.get("roles", ())),
        path=path,
        department=raw.get("department"),
        email=raw.get("email"),
    )


def parse_span(text: str) -> tuple[int, int]:
    """ "09:00-12:00" → (540, 720), minutes after midnight. The schema fixed the shape; the range
    (e.g. 25:00, or an end before the start) is for semantic to judge."""
    start, end = text.split("-")
    return _minutes(start), _minutes(end)


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def _build_calendar(raw: Mapping[str, Any]) -> WorkingCalendar:
    default = WorkingCalendar()
    days = raw.get("working_days")
    hours = raw.get("working_hours")
    return WorkingCalendar(
        timezone=raw.get("timezone", default.timezone),
        working_days=default.working_days if days is None else tuple(_WEEKDAYS.index(d) for d in days),
        working_hours=default.working_hours if hours is None else tuple(parse_span(h) for h in hours),
        holidays=tuple(raw.get("holidays", ())),
        extra_working_days=tuple(raw.get("extra_working_days", ())),
    )
