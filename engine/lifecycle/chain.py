"""`audit verify`'s check of the lifecycle log (trials, adoptions, migrations): the log is append-only and
hash-chained (migration 0014), so an act edited, one removed before another, or one forged into it is
named; an anchor holds the chain's head, so acts cut from its end are caught too."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sopflow.engine.store import lifecycle as sql

if TYPE_CHECKING:
    from sopflow.engine.anchor import Anchor
    from sopflow.engine.store.store import Store
    from sopflow.engine.verify import VerifyFinding


def head(store: Store) -> tuple[int, str]:
    """How many acts the log holds and the hash of the newest (what an anchor holds of it)."""
    return sql.head(store)


def findings(store: Store, anchors: Sequence[Anchor] = ()) -> list[VerifyFinding]:
    """Each act that breaks the log's chain (edited, forged, or one before it removed), and against each
    anchor holding the chain's head, acts removed from the end or rewritten."""
    from sopflow.engine.verify import VerifyFinding, anchored_rows

    rows = sql.actions(store)
    found = [
        VerifyFinding(None, None, problem, f"lifecycle act {i}") for i, problem in sql.chain_findings(rows)
    ]
    hashes = [r.hash for r in rows]
    for anchor in anchors:
        found += anchored_rows(anchor.label, anchor.lifecycle, hashes, "lifecycle log", "acts")
    return found
