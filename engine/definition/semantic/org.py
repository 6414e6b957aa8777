"""Meaning checks on the org file: roles, departments, an administrator, and the working calendar."""

from __future__ import annotations

import datetime
import zoneinfo
from collections.abc import Callable, Iterator, Mapping

from sopflow.engine.definition.loader import Document
from sopflow.engine.definition.model import Org, Path
from sopflow.engine.definition.semantic.context import did_you_mean, problem, raw, sort_problems
from sopflow.engine.errors import Problem

ORG_CODES = ("unknown-role", "unknown-department", "no-administrator", "bad-calendar", "no-access")
"""Every code `check_org` reports."""


def _org_unknown_roles(org: Org, doc: Document) -> Iterator[Problem]:
    for user in org.users.values():
        for i, held in enumerate(user.roles):
            if held not in org.roles:
                yield problem(
                    doc,
                    (*user.path, "roles", i),
                    "unknown-role",
                    f"user `{user.id}` holds unknown role `{held}`",
                    did_you_mean(held, org.roles) or "define the role under `roles:`",
                )
    for role in org.roles.values():
        if role.manager is not None and role.manager not in org.roles:
            yield problem(
                doc,
                (*role.path, "manager"),
                "unknown-role",
                f"role `{role.name}` is managed by unknown role `{role.manager}`",
                did_you_mean(role.manager, org.roles) or "define the role under `roles:`",
            )


def _org_unknown_departments(org: Org, doc: Document) -> Iterator[Problem]:
    if not isinstance(raw(doc, ("departments",)), Mapping):
        return  # an org that lists no departments leaves department names free
    owners = [(r.department, r.path) for r in org.roles.values()] + [
        (u.department, u.path) for u in org.users.values()
    ]
    for name, path in owners:
        if name is not None and name not in org.departments:
            yield problem(
                doc,
                (*path, "department"),
                "unknown-department",
                f"there is no department `{name}`",
                did_you_mean(name, org.departments) or "define it under `departments:`",
            )


def _org_administrator(org: Org, doc: Document) -> Iterator[Problem]:
    if not any(r.administrator for r in org.roles.values()):
        yield problem(
            doc,
            ("roles",),
            "no-administrator",
            "no role is an administrator, so nobody can reassign stuck cases",
            "mark one role with `administrator: true`",
            key=True,
            severity="warning",
        )


def _org_access(org: Org, doc: Document) -> Iterator[Problem]:
    if org.access is None:
        return
    granted = {grant.role for grant in org.access}
    for name in sorted(granted):
        if name not in org.roles:
            yield problem(
                doc,
                ("access", name),
                "unknown-role",
                f"the permission matrix grants to unknown role `{name}`",
                did_you_mean(name, org.roles) or "define the role under `roles:`",
                key=True,
            )
    for role in org.roles.values():
        if role.name not in granted and org.members(role.name):
            yield problem(
                doc,
                role.path,
                "no-access",
                f"the permission matrix grants role `{role.name}` nothing: "
                "its holders see no case through it",
                f"add `{role.name}:` under `access:` with the actions and scope it needs",
                key=True,
                severity="warning",
            )


def _calendar_faults(org: Org, doc: Document) -> Iterator[tuple[Path, str]]:
    cal = org.calendar
    try:
        zoneinfo.ZoneInfo(cal.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        yield ("calendar", "timezone"), f"`{cal.timezone}` is not a known time zone (e.g. Asia/Shanghai)"
    for i, (start, end) in enumerate(cal.working_hours):
        if not 0 <= start < end <= 24 * 60:
            text = raw(doc, ("calendar", "working_hours", i))
            yield ("calendar", "working_hours", i), f"`{text}` is not a span within one day, start before end"
    for key in ("holidays", "extra_working_days"):
        for i, day in enumerate(getattr(cal, key)):
            try:
                datetime.date.fromisoformat(day)
            except ValueError:
                yield ("calendar", key, i), f"`{day}` is not a date"


def _org_calendar(org: Org, doc: Document) -> Iterator[Problem]:
    for path, message in _calendar_faults(org, doc):
        yield problem(doc, path, "bad-calendar", message)


ORG_CHECKS: tuple[Callable[[Org, Document], Iterator[Problem]], ...] = (
    _org_unknown_roles,
    _org_unknown_departments,
    _org_administrator,
    _org_calendar,
    _org_access,
)


def check_org(org: Org, doc: Document) -> list[Problem]:
    """Every meaning problem of the org, sorted."""
    return sort_problems(p for check in ORG_CHECKS for p in check(org, doc))
