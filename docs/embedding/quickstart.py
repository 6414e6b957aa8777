"""Embed sopflow: deploy the seed processes, run a tiered-approval case, read it back, verify the trail."""

import sys
import tempfile
from pathlib import Path

from sopflow.engine import Engine, NotPermitted

definitions = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("definitions")
database = Path(tempfile.mkdtemp()) / "cases.db"

with Engine(f"sqlite:///{database}") as sop:
    sop.deploy([definitions], actor="han.bing")

    # A major reform needs the operations director and the technology director (002 §二(二)1).
    started = sop.start(
        "tiered-approval",
        {
            "title": "上线会员积分商城",
            "tier": "major_reform",
            "description": "Points can be exchanged for goods",
            "supporting_data": [{"metric": "conversion_rate", "value": 0.021, "source": "交易记录"}],
        },
        actor="zhou.qiang",
        key="proposal-2026-117",  # retrying with the same key returns this case, never a second one
    )
    case_id = started.case.id
    submitted = sop.fire(case_id, "submit", actor="zhou.qiang", expect_version=started.case.version)
    print(submitted.case.state)  # major_reform_approval

    try:
        sop.fire(case_id, "approve", actor="zhou.qiang")  # the submitter may not approve
    except NotPermitted as refusal:
        print("refused:", refusal.message)  # and the refusal is in the audit trail

    sop.fire(case_id, "approve", actor="ma.chao", comment="运营侧同意")
    print(sop.approval_progress(case_id))
    done = sop.fire(case_id, "approve", actor="guo.hui", comment="技术侧可支撑")
    print(done.case.state, done.case.open)  # approved False

    for option in sop.options(case_id, "ma.chao"):
        print(option.event, option.allowed, option.reason)

    for record in sop.history(case_id):
        print(record.seq, record.actor, record.role, record.event, record.outcome, record.to_state)

    waiting = sop.cases(definition="tiered-approval", state="major_reform_approval", limit=10)
    print(len(waiting), "waiting for directors")

    report = sop.verify()
    assert report.ok, report.findings
    print(f"{report.records} audit records verified")
