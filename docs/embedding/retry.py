"""Retry a write safely: every start and fire has an idempotency key, and an unknown outcome is retried
with it, so the write is applied once."""

import sys
import tempfile
from pathlib import Path
from typing import Any

from sopflow.engine import Conflict, Engine, OutcomeUnknown, Result

definitions = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("definitions")
database = Path(tempfile.mkdtemp()) / "cases.db"


def fire_once(sop: Engine, case_id: int, event: str, **step: Any) -> Result:
    """Fire; when the connection broke while committing, repeat the same request under its key."""
    try:
        return sop.fire(case_id, event, **step)
    except OutcomeUnknown as err:
        return sop.fire(case_id, event, key=err.key, **step)


with Engine(f"sqlite:///{database}") as sop:
    sop.deploy([definitions])
    # Your own request id as the key: a repeated import starts no second case.
    data = {"title": "春季活动", "origin": "original"}
    case = sop.start("content-review", data, actor="li.na", key="cms-1001").case
    print("replayed:", sop.start("content-review", data, actor="li.na", key="cms-1001").replayed)
    payload = {"material_url": "https://cms.example.com/m/1001"}
    first = fire_once(sop, case.id, "submit", actor="li.na", payload=payload)
    again = sop.fire(case.id, "submit", actor="li.na", payload=payload, key=first.key)
    print("same key, same step:", again.replayed, again.case.version == first.case.version)
    other = {"material_url": "https://cms.example.com/m/1002"}
    try:
        sop.fire(case.id, "submit", actor="li.na", payload=other, key=first.key)
    except Conflict as exc:
        print("refused:", exc.message)
