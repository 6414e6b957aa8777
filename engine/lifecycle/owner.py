"""Who may act on a definition's versions (start or stop a trial, adopt a version, migrate cases): an
administrator, or the process owner — a member of the role that owns the definition's first state
(`initial:`) or of a role above it in the org's management line (each role's `manager:`), held or held by
delegation. `audit verify` decides a migration record's role again with it."""

from __future__ import annotations

from sopflow.engine.definition.model import Definition, Org
from sopflow.engine.errors import NotPermitted
from sopflow.engine.step import Actor


def process_owners(definition: Definition, org: Org) -> list[str]:
    """The process owner's role (the owner of the definition's first state) and the roles above it, the
    nearest first ([] when the first state names no owner)."""
    found: list[str] = []
    role = definition.states[definition.initial].owner
    while role is not None and role not in found:
        found.append(role)
        above = org.roles.get(role)
        role = above.manager if above is not None else None
    return found


def decide_owner(definition: Definition, org: Org, person: Actor, act: str) -> tuple[str, str | None]:
    """The role in which `person` may do `act` on `definition`'s versions, and whom they act for (a
    delegated role); NotPermitted when they may not. Administrators first, then the owner's line nearest
    first, own roles before delegated ones."""
    owners = process_owners(definition, org)
    admin = sorted(r for r in person.roles if r in org.roles and org.roles[r].administrator)
    allowed = admin + [r for r in owners if r not in admin]
    held = [r for r in allowed if r in person.roles]
    held.sort(key=lambda r: r in person.delegated)
    if not held:
        needed = f"the process owner's role `{owners[0]}` (or a role above it) or " if owners else ""
        raise NotPermitted(
            f"{person.id} may not {act} {definition.id}: it needs {needed}an administrator",
            hint="ask an administrator" + (f" or a member of {', '.join(owners)}" if owners else ""),
        )
    role = held[0]
    return role, person.delegated.get(role)
