"""The access log: every read or write the permission matrix refused, and every export (who, what, when,
how many records), as one hash chain kept by `engine.store.access`; `audit verify` checks it here.

A row changed behind the engine's back no longer matches its hash; a row removed breaks the numbering or
the link of the next; the database refuses UPDATE, DELETE and REPLACE on the table (migration 0010), so
either takes someone who switched the triggers off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sopflow.engine.access import AccessDenied, refused
from sopflow.engine.store.access import AccessEntry, chain_findings, entries, hash_at, head
from sopflow.engine.verify import VerifyFinding

if TYPE_CHECKING:
    from sopflow.engine.anchor import Anchor
    from sopflow.engine.runtime import Engine
    from sopflow.engine.store import Store


def check(store: Store) -> list[VerifyFinding]:
    """A finding for each row of the access log that breaks its chain."""
    return [
        VerifyFinding(None, None, problem, f"access log row {seq}")
        for seq, problem in chain_findings(entries(store))
    ]


def since_anchor(anchor: Anchor, store: Store) -> list[VerifyFinding]:
    """The rows `anchor` held must all still be there, its head row with the hash it held: a chain alone
    cannot show its newest rows cut off (nothing after them is left to break), an anchor can."""
    if anchor.access_log is None:
        return []
    seq, digest = anchor.access_log
    last = head(store)
    remain = 0 if last is None else last[0]
    if remain < seq:
        gone = f"row {seq} is" if remain + 1 == seq else f"rows {remain + 1} to {seq} are"
        problem = f"{gone} gone: {anchor.label} holds {seq} row(s), {remain} remain"
        return [VerifyFinding(None, None, problem, "access log")]
    if hash_at(store, seq) != digest:
        problem = f"its hash is not the one {anchor.label} holds: rows up to it were rewritten"
        return [VerifyFinding(None, None, problem, f"access log row {seq}")]
    return []


def read(engine: Engine, actor: str | None = None, viewer: str | None = None) -> list[AccessEntry]:
    """The access log, oldest first (one person's rows when `actor` is given), for the operator (`viewer`
    None) or a person holding an administrator role; anyone else is refused, and that is recorded too."""
    if viewer is not None:
        org = engine.org()
        person = engine.actor(viewer, org=org)
        if org.access is not None and not any(
            org.roles[r].administrator for r in person.roles if r in org.roles
        ):
            raise refused(
                engine,
                AccessDenied(
                    f"{viewer} may not read the access log: it is for administrators",
                    viewer,
                    "view",
                    "the access log",
                    hint="ask an administrator, or the operator, to read it",
                ),
            )
    return list(entries(engine.store, actor=actor))
