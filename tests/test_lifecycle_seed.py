"""The seed SOP-revision process runs the lifecycle, on both databases: its "do" step has the system start a
trial of the revised SOP (new cases split between the versions), its "check" step receives the system's
comparison of the versions over the trial, and its "act" step has the system adopt the new version; each
act is the operations manager's, who stands above the SOP's process owner."""

from __future__ import annotations

import re
from pathlib import Path

from sopflow.engine.runtime import Engine
from sopflow.engine.worker import ConsoleChannel, Worker
from tests.conftest import DEFINITIONS, Clock


def revised(tmp_path: Path) -> tuple[Path, int]:
    """content-review's next version (its first step retitled), and the version it replaces."""
    text = (DEFINITIONS / "content-review.yaml").read_text(encoding="utf-8")
    found = re.search(r"^version: (\d+)$", text, re.M)
    assert found is not None
    current = int(found.group(1))
    text = text.replace(f"\nversion: {current}\n", f"\nversion: {current + 1}\n", 1)
    text = text.replace("en: Content Review", "en: Content Review (revised)", 1)
    path = tmp_path / "content-review-revised.yaml"
    path.write_text(text, encoding="utf-8")
    return path, current


def test_the_sop_revision_process_trials_compares_and_adopts(
    database_url: str, clock: Clock, tmp_path: Path
) -> None:
    path, old = revised(tmp_path)
    new = old + 1
    with Engine(database_url, clock=clock) as sop:
        sop.deploy([DEFINITIONS, path])
        worker = Worker(sop, channels=[ConsoleChannel(write=lambda _line: None)])
        data = {
            "sop_name": "内容审核SOP",
            "quarter": "2026-Q1",
            "sop_version": old,
            "definition": "content-review",
        }
        case = sop.start("sop-revision", data, actor="chen.jing").case.id
        sop.fire(case, "revision_needed", actor="chen.jing")
        plan = {
            "findings": "重复检查",
            "target": "时长降到150分钟",
            "change_summary": "合并检查",
            "baseline_review_minutes": 210,
            "baseline_complaint_rate": 0.012,
            "revised_version": new,
        }
        assert sop.fire(case, "start_trial", actor="chen.jing", payload=plan).case.state == "trial_starting"
        worker.tick()
        assert sop.case(case).state == "do_trial"
        (act,) = sop.lifecycle_log("content-review")
        assert (act.action, act.actor, act.role, dict(act.versions)) == (
            "trial_start", "chen.jing", "operations_manager", {str(old): 50, str(new): 50},
        )  # fmt: skip
        # New content-review cases split; the revised version decides faster.
        versions = []
        for n in range(30):
            clock.advance(minutes=1)
            started = sop.start("content-review", {"title": f"稿件{n}", "origin": "original"}, actor="li.na")
            versions.append(started.case.definition_version)
            clock.advance(hours=5 if started.case.definition_version == old else 1)
            sop.fire(started.case.id, "withdraw", actor="li.na", payload={"reason": "试行"})
        assert set(versions) == {old, new}
        sop.fire(case, "end_trial", actor="chen.jing")
        worker.tick()
        checked = sop.case(case)
        assert checked.state == "check"
        assert (checked.data["old_cases"], checked.data["new_cases"]) == (
            versions.count(old),
            versions.count(new),
        )
        assert checked.data["new_median_hours"] < checked.data["old_median_hours"]
        assert checked.data["trial_verdict"]
        assert sop.trial_status("content-review").policy.split is None  # the system ended the trial
        comparison = {"new_review_minutes": 145, "new_complaint_rate": 0.011, "notes": "时长下降"}
        sop.fire(case, "submit_comparison", actor="gao.yan", payload=comparison)
        assert sop.case(case).state == "act"
        sop.fire(
            case, "adopt_new_version", actor="chen.jing", payload={"new_version": new, "change_log": "合并"}
        )
        worker.tick()
        assert sop.case(case).state == "adopted"
        assert sop.trial_status("content-review").policy.adopted == new
        after = sop.start("content-review", {"title": "新稿", "origin": "original"}, actor="li.na")
        assert after.case.definition_version == new
        assert [a.action for a in sop.lifecycle_log("content-review")] == [
            "trial_start",
            "trial_stop",
            "adopt",
        ]
        assert sop.verify().ok
