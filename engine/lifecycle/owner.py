"""Who may act on a definition's versions (start or stop a trial, adopt a version, migrate cases): an
administrator, or a member of the process owner's role — the role that owns the definition's first state
(`initial:`), held or held by delegation. `audit verify` decides a migration record's role again with it."""

from __future__ import annotations

from sopflow.engine.definition.model import Definition, Org
from sopflow.engine.errors import NotPermitted
from sopflow.engine.step import Actor


def process_owner(definition: Definition) -> str | None:
    """The process owner's role: the owner of the definition's first state (None: it names none)."""
    return definition.states[definition.initial].owner


def decide_owner(definition: Definition, org: Org, person: Actor, act: str) -> tuple[str, str | None]:
    """The role in which `person` may do `act` on `definition`'s versions, and whom they act for (a
    delegated role); NotPermitted when they may not. Administrators first, own roles before delegated."""
    owner = process_owner(definition)
    admin = sorted(r for r in person.roles if r in org.roles and org.roles[r].administrator)
    allowed = admin + ([owner] if owner is not None and owner not in admin else [])
    held = [r for r in allowed if r in person.roles]
    held.sort(key=lambda r: r in person.delegated)
    if not held:
        needed = f"the process owner's role `{owner}` or " if owner else ""
        raise NotPermitted(
            f"{person.id} may not {act} {definition.id}: it needs {needed}an administrator",
            hint="ask an administrator" + (f" or a member of {owner}" if owner else ""),
        )
    role = held[0]
    return role, person.delegated.get(role)
