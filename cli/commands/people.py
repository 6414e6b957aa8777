"""Commands about people: tasks, reassign, delegate, delegations, undelegate."""

from __future__ import annotations

from datetime import datetime

import click

from sopflow.cli.main import emit, settings
from sopflow.cli.output import case_dict, print_result
from sopflow.cli.params import CASE, DELEGATION, LIMIT, TIME
from sopflow.cli.render import ago, table


@click.command()
@click.option("--limit", type=LIMIT, default=50, show_default=True, help="At most this many.")
def tasks(limit: int) -> None:
    """Every case where the --as user can act now (assigned, their roles, a vote awaited, a case to
    claim, roles delegated to them), most urgent first: nearest deadline, then longest waiting."""
    s = settings()
    engine = s.engine()
    items = engine.tasks(s.actor(), limit=limit)
    now = engine.clock()
    if s.json:
        emit(
            [
                {
                    "case": case_dict(t.case),
                    "events": list(t.events),
                    "reason": t.reason,
                    "waiting_seconds": round((now - t.waiting_since).total_seconds()),
                    "deadline": t.deadline,
                    "due_at": t.due_at.isoformat() if t.due_at else None,
                }
                for t in items
            ]
        )
        return
    if not items:
        click.echo(f"nothing waits on {s.actor()}")
        return
    rows = []
    for t in items:
        if t.due_at is None:
            due = ""
        elif t.due_at >= now:
            due = f"{ago(now, t.due_at)} left"
        else:
            due = f"OVERDUE {ago(t.due_at, now)}"
        rows.append(
            (
                t.case.id,
                t.case.definition_key,
                t.case.state,
                ago(t.waiting_since, now),
                due,
                ", ".join(t.events),
                t.reason,
            )
        )
    click.echo(table(["case", "definition", "state", "waiting", "deadline", "you may", "why"], rows))


@click.command()
@click.argument("case", type=CASE)
@click.argument("user")
@click.option("--comment", help="Why, kept in the audit trail (at most 16 KiB).")
def reassign(case: int, user: str, comment: str | None) -> None:
    """Give CASE's current step to USER (who must hold the owning role). For the owning role's manager
    role or an administrator; audited either way."""
    s = settings()
    print_result(s.engine().reassign(case, user, actor=s.actor(), comment=comment))


@click.command()
@click.argument("to_user")
@click.option("--until", "until", type=TIME, required=True, help="When it ends by itself (ISO 8601).")
@click.option("--from", "starts", type=TIME, help="When it starts (ISO 8601; default now).")
@click.option("--role", "roles", multiple=True, help="A role to hand over (repeatable; default all).")
@click.option("--for", "for_user", help="Delegate someone else's roles (administrators only).")
@click.option("--reason", help="Why (absence, holiday), kept with the delegation.")
def delegate(
    to_user: str,
    until: datetime,
    starts: datetime | None,
    roles: tuple[str, ...],
    for_user: str | None,
    reason: str | None,
) -> None:
    """Hand your roles (or some) to TO_USER for a period; their actions are recorded as theirs on your
    behalf. The delegation is kept in an append-only table and ends by itself."""
    s = settings()
    actor = s.actor()
    grant = s.engine().delegate(
        for_user or actor,
        to_user,
        actor=actor,
        ends_at=until,
        starts_at=starts,
        roles=roles,
        reason=reason,
    )
    if s.json:
        emit(
            {
                "id": grant.id,
                "delegator": grant.delegator,
                "delegate": grant.delegate,
                "roles": list(grant.roles),
                "starts_at": grant.starts_at.isoformat(),
                "ends_at": grant.ends_at.isoformat(),
            }
        )
        return
    click.echo(
        f"delegation {grant.id}: {grant.delegate} acts for {grant.delegator} "
        f"({', '.join(grant.roles) or 'all roles'}) from {grant.starts_at:%Y-%m-%d %H:%M} "
        f"until {grant.ends_at:%Y-%m-%d %H:%M} UTC"
    )


@click.command()
@click.option("--user", help="Only delegations from or to this user.")
def delegations(user: str | None) -> None:
    """Delegations that were not revoked, newest first, with whether each runs now."""
    s = settings()
    engine = s.engine()
    now = engine.clock()
    rows = engine.delegations(user)
    if s.json:
        emit(
            [
                {
                    "id": d.id,
                    "delegator": d.delegator,
                    "delegate": d.delegate,
                    "roles": list(d.roles),
                    "starts_at": d.starts_at.isoformat(),
                    "ends_at": d.ends_at.isoformat(),
                    "running": d.starts_at <= now < d.ends_at,
                    "reason": d.reason,
                }
                for d in rows
            ]
        )
        return
    click.echo(
        table(
            ["id", "from", "to", "roles", "starts (UTC)", "ends (UTC)", "now"],
            [
                (
                    d.id,
                    d.delegator,
                    d.delegate,
                    ", ".join(d.roles) or "all",
                    f"{d.starts_at:%Y-%m-%d %H:%M}",
                    f"{d.ends_at:%Y-%m-%d %H:%M}",
                    "running"
                    if d.starts_at <= now < d.ends_at
                    else "ended"
                    if now >= d.ends_at
                    else "future",
                )
                for d in rows
            ],
        )
    )


@click.command()
@click.argument("delegation_id", type=DELEGATION)
@click.option("--reason", help="Why it ends early.")
def undelegate(delegation_id: int, reason: str | None) -> None:
    """End a delegation now (the delegator, the delegate or an administrator)."""
    s = settings()
    revoked = s.engine().revoke_delegation(delegation_id, actor=s.actor(), reason=reason)
    if s.json:
        emit({"id": delegation_id, "revoked": True, "revocation": revoked.id})
        return
    click.echo(f"delegation {delegation_id} revoked")


COMMANDS = [tasks, reassign, delegate, delegations, undelegate]
