"""What a new org would do to the running cases: the people and roles it drops that open cases still point
at. `Engine.deploy` refuses such an org (`StrandedCases`, per case), or with `allow_stranded` deploys it
and returns the same list, so that an administrator can reassign the cases it names.

A running case points at people through its starter, its assignee, the person who moved it into its state (an
approval's submitter), the `format: user` fields of its data, and the delegations running now; and at
roles through the state it waits in (its owner, who may fire its events, its approvers, the role it is
assigned from) and through the people and roles its deadlines escalate to.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING

from sopflow.engine.definition.model import SPECIAL_ACTORS, Definition, Org, State
from sopflow.engine.errors import Conflict
from sopflow.engine.store import CaseQuery, CaseRow, OrgRow

if TYPE_CHECKING:
    from sopflow.engine.runtime import Engine

PAGE = 1000


def refuse_unasked(deployed: OrgRow, new: Org, *, beside: bool, replace_org: bool) -> None:
    """Refuse to replace the deployed org by `new` without being asked: an org of another id (another
    organisation's people, roles and matrix) needs `replace_org`; a changed org found beside a definition
    file, not named, is deployed only when named (the definition file alone was asked for)."""
    if deployed.content_hash == new.content_hash:
        return
    if deployed.org_id != new.id and not replace_org:
        raise Conflict(
            f"the deployed org is `{deployed.org_id}`; {new.file} is the org `{new.id}`: deploying it would "
            f"replace every person, role and grant of `{deployed.org_id}`; nothing was deployed",
            hint="deploy the definition with the deployed org's file beside it (or name that file), or, "
            "to replace the organisation on purpose, name the new org file and add --replace-org",
        )
    if beside:
        raise Conflict(
            f"{new.file}, found beside the definition, differs from the deployed org `{deployed.org_id}`; "
            "an org beside a definition file is deployed only when named; nothing was deployed",
            hint=f"to deploy that org too, name it: sopflow deploy {new.file} <definition files>; to "
            "deploy only the definition, copy it beside the deployed org's file",
        )


def stranded(engine: Engine, new: Org, now: datetime) -> list[tuple[int, str]]:
    """(case, what it would lose) for every open case the org `new` would strand, oldest case first;
    and (0, ...) for each running delegation it would strand."""
    found: list[tuple[int, str]] = []
    after: int | None = None
    while True:
        rows = engine.store.cases(CaseQuery(open=True, after_id=after, limit=PAGE))
        for row in rows:
            definition = engine.definition(row.definition_id, row.definition_version)
            found += [(row.id, problem) for problem in _case_problems(definition, row, new)]
        if len(rows) < PAGE:
            break
        after = rows[-1].id
    for grant in engine.store.delegations():
        if not grant.starts_at <= now < grant.ends_at:
            continue
        gone = [u for u in (grant.delegator, grant.delegate) if u not in new.users]
        lost = [r for r in grant.roles if r not in new.roles]
        if gone or lost:
            what = ", ".join([*(f"person {u}" for u in gone), *(f"role {r}" for r in lost)])
            grant_text = f"delegation {grant.id} ({grant.delegator} → {grant.delegate})"
            found.append((0, f"{grant_text} runs with {what}, which the org would not have"))
    return found


def _case_problems(definition: Definition, row: CaseRow, new: Org) -> Iterator[str]:
    people = {"starter": row.starter, "assignee": row.assignee, "submitter": row.submitter}
    for field, role in definition.user_fields().items():
        value = row.data.get(field)
        if isinstance(value, str):
            people[f"data field `{field}`"] = value
            user = new.users.get(value)
            if user is not None and role is not None and role not in user.roles:
                yield f"data field `{field}` names {value}, who would no longer hold {role}"
    for what, person in people.items():
        if person is not None and person not in SPECIAL_ACTORS and person not in new.users:
            yield f"its {what} {person} would not be in the org"
    state = definition.states[row.state]
    for role in sorted(_state_roles(state)):
        if role not in new.roles:
            yield f"state `{state.name}` needs the role {role}, which the org would not have"
    for d in definition.deadlines:
        for rung in d.escalate:
            gone = rung.target not in new.roles and rung.target not in new.users
            if rung.action in ("notify", "reassign") and gone:
                yield f"deadline `{d.name}` escalates to {rung.target}, whom the org would not have"


def _state_roles(state: State) -> set[str]:
    roles: set[str] = set()
    if state.owner:
        roles.add(state.owner)
    for t in state.transitions:
        roles.update(r for r in t.by if r not in SPECIAL_ACTORS)
    if state.approval is not None:
        roles.update(state.approval.roles)
    if state.assign is not None and state.assign.kind in ("least_loaded", "claim", "round_robin"):
        roles.add(state.assign.value)
    return roles
