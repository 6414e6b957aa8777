"""`audit verify` on what decides who may act, beyond the definitions' and orgs' own hashes: the
delegation log, and what was added to the registry after an anchor.

Every grant and revocation must have been one its author was allowed to make: a grant written straight
into the table (it is append-only, so an INSERT passes the triggers) would otherwise let the replay
accept steps "on behalf of" someone who never delegated. Against an anchor, the log rows it held must be
unchanged, and nothing added since (a delegation, an org, a definition) may claim a time before it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sopflow.engine.audit import canonical_json, iso
from sopflow.engine.definition.model import Org
from sopflow.engine.store import DelegationRow
from sopflow.engine.verify import VerifyFinding

if TYPE_CHECKING:
    from sopflow.engine.anchor import Anchor
    from sopflow.engine.store import Store


def log_digest(rows: Sequence[DelegationRow]) -> str:
    """SHA-256 over the canonical JSON of the rows, in order: what an anchor holds of the log."""
    plain = [
        [
            r.id, r.kind, r.delegator, r.delegate, list(r.roles), iso(r.starts_at), iso(r.ends_at), r.revokes,
            r.created_by, iso(r.created_at), r.reason,
        ]
        for r in rows
    ]  # fmt: skip
    return hashlib.sha256(canonical_json(plain).encode("utf-8")).hexdigest()


def check_log(
    log: Sequence[DelegationRow], orgs_at: Callable[[datetime], Sequence[Org | None]]
) -> list[VerifyFinding]:
    """What is wrong with each grant and revocation, judged by the org in force when it was made."""
    grants = {row.id: row for row in log if row.kind == "grant"}
    found: list[VerifyFinding] = []
    for row in log:
        orgs = [o for o in orgs_at(row.created_at) if o is not None]
        problems = [_problem(row, org, grants) for org in orgs] or ["no intact org was in force then"]
        if all(p is not None for p in problems):
            found.append(VerifyFinding(None, None, str(problems[0]), f"delegation {row.id}"))
    return found


def _problem(row: DelegationRow, org: Org, grants: dict[int, DelegationRow]) -> str | None:
    admin = row.created_by in org.users and any(
        org.roles[r].administrator for r in org.users[row.created_by].roles if r in org.roles
    )
    if row.kind == "revoke":
        grant = grants.get(row.revokes or 0)
        if grant is None or grant.id >= row.id:
            return f"it revokes delegation {row.revokes}, which is no earlier grant"
        if row.created_by not in (grant.delegator, grant.delegate) and not admin:
            return f"{row.created_by} revoked it, who is neither party to it nor an administrator"
        return None
    if row.kind != "grant":
        return f"it is a `{row.kind}`, neither a grant nor a revocation"
    if row.delegator not in org.users or row.delegate not in org.users or row.delegator == row.delegate:
        return (
            f"it hands {row.delegator}'s roles to {row.delegate}, which the org in force then does not allow"
        )
    if row.created_by != row.delegator and not admin:
        return f"{row.created_by} granted it, who is neither {row.delegator} nor an administrator"
    held = org.users[row.delegator].roles
    if any(role not in held for role in row.roles):
        return f"it hands over {', '.join(row.roles)}, but {row.delegator} held {', '.join(held) or 'none'}"
    if row.ends_at <= row.starts_at:
        return "it ends before it starts"
    return None


def since_anchor(
    anchor: Anchor, store: Store, org_times: Sequence[datetime], log: Sequence[DelegationRow]
) -> list[VerifyFinding]:
    """The delegation rows `anchor` held must be as it held them; rows, orgs and definitions added since
    must not be dated before it (a backdated grant or org would make past steps look allowed)."""
    made = datetime.fromisoformat(anchor.created_at.replace("Z", "+00:00"))
    found: list[VerifyFinding] = []
    held = 0
    if anchor.delegations is not None:
        held, digest = anchor.delegations
        if len(log) < held:
            found.append(
                VerifyFinding(
                    None, None, f"{anchor.label} holds {held} rows, {len(log)} remain", "delegations"
                )
            )
        elif log_digest(log[:held]) != digest:
            found.append(VerifyFinding(None, None, f"rows {anchor.label} holds were edited", "delegations"))
    for entry in log[held:]:
        if anchor.delegations is not None and entry.created_at < made:
            found.append(
                VerifyFinding(
                    None,
                    None,
                    f"it was added after {anchor.label} but is dated before it",
                    f"delegation {entry.id}",
                )
            )
    for number, when in enumerate(org_times[len(anchor.orgs) :], len(anchor.orgs) + 1):
        if when < made:
            found.append(
                VerifyFinding(
                    None,
                    None,
                    f"it was added after {anchor.label} but is dated before it",
                    f"org deployment {number}",
                )
            )
    for row in store.definitions():
        key = f"{row.definition_id}@{row.version}"
        if key not in anchor.definitions and row.deployed_at < made:
            found.append(
                VerifyFinding(
                    None,
                    None,
                    f"it was added after {anchor.label} but is dated before it",
                    f"definition {key}",
                )
            )
    return found
