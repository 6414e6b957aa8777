"""Who sees what: a case read by its department, by another department and by an analyst (desensitised),
the same filter in your own SQL, and the access log."""

import os
import secrets
import sys
import tempfile
from pathlib import Path

from sqlalchemy import func, select  # noqa: TID251 - your own statements, outside sopflow

from sopflow.engine import Engine
from sopflow.engine.access import viewer_filter
from sopflow.engine.errors import NotFound
from sopflow.engine.store.tables import cases

definitions = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("definitions")
folder = Path(tempfile.mkdtemp())
key = folder / "privacy.key"  # keep the real one outside the database and its backups
key.write_bytes(secrets.token_bytes(32))
os.environ["SOPFLOW_PRIVACY_KEY_FILE"] = str(key)

with Engine(f"sqlite:///{folder / 'cases.db'}") as sop:
    sop.deploy([definitions])
    data = {"title": "春季活动", "origin": "user_submission", "contributor": "用户小王"}
    case = sop.start("content-review", data, actor="li.na").case

    print("the operator reads:", sop.case(case.id).data["contributor"])
    print("a colleague reads:", sop.case(case.id, viewer="wang.fang").data["contributor"])
    try:
        sop.case(case.id, viewer="du.juan")  # customer service: not their process
    except NotFound as exc:
        print("customer service is told:", exc.message)
    analyst = sop.case(case.id, viewer="gao.yan").data["contributor"]
    print("an analyst reads a token:", analyst != "用户小王", len(analyst))

    with sop.store.engine.connect() as conn:
        for viewer in ("wang.fang", "du.juan"):
            count = select(func.count()).select_from(cases).where(viewer_filter(sop, viewer))
            print(f"cases {viewer} may view:", conn.execute(count).scalar_one())

    for entry in sop.access_log():
        print("access log:", entry.seq, entry.actor, entry.action, entry.target, entry.outcome)
    print("verified:", sop.verify().ok)
