"""People in the loop on both databases: delegation (on behalf of, ends by itself, revoked, one person
one vote), reassigning (who may, audited), and each person's task list, most urgent first."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from sopflow.engine.errors import InvalidData, NotPermitted, UsageError
from sopflow.engine.runtime import Engine
from tests.conftest import Clock, engine_on

DEFINITIONS = Path(__file__).resolve().parent.parent / "definitions"

REFORM: dict[str, Any] = {
    "title": "上线会员积分商城",
    "tier": "major_reform",
    "description": "points mall",
    "supporting_data": [{"metric": "conversion_rate", "value": 0.021, "source": "交易记录"}],
}
DAILY: dict[str, Any] = {**REFORM, "tier": "daily_optimisation", "title": "文案微调"}


@pytest.fixture
def engine(database_url: str, clock: Clock) -> Iterator[Engine]:
    yield from engine_on(database_url, clock, DEFINITIONS)


def reform(engine: Engine, data: dict[str, Any] = REFORM) -> int:
    case_id = engine.start("tiered-approval", data, actor="zhou.qiang").case.id
    engine.fire(case_id, "submit", actor="zhou.qiang")
    return case_id


def test_a_delegate_acts_on_behalf_and_the_record_says_so(engine: Engine, clock: Clock) -> None:
    case_id = reform(engine)
    with pytest.raises(NotPermitted):
        engine.fire(case_id, "approve", actor="chen.jing")
    engine.delegate(
        "ma.chao",
        "chen.jing",
        actor="ma.chao",
        ends_at=clock.now + timedelta(days=7),
        roles=["operations_director"],
        reason="annual leave",
    )
    result = engine.fire(case_id, "approve", actor="chen.jing", comment="代运营总监审批")
    assert (result.record.actor, result.record.on_behalf_of, result.record.role) == (
        "chen.jing",
        "ma.chao",
        "operations_director",
    )
    with pytest.raises(NotPermitted, match=r"ma\.chao has already voted"):
        engine.fire(case_id, "approve", actor="ma.chao")
    assert engine.fire(case_id, "approve", actor="guo.hui").case.state == "approved"


def test_a_delegation_ends_by_itself_and_can_be_revoked(engine: Engine, clock: Clock) -> None:
    grant = engine.delegate("ma.chao", "chen.jing", actor="ma.chao", ends_at=clock.now + timedelta(hours=2))
    assert "operations_director" in engine.actor("chen.jing").roles
    clock.advance(hours=3)
    assert "operations_director" not in engine.actor("chen.jing").roles
    second = engine.delegate("ma.chao", "lin.tao", actor="ma.chao", ends_at=clock.now + timedelta(days=1))
    assert "operations_director" in engine.actor("lin.tao").roles
    engine.revoke_delegation(second.id, actor="lin.tao")
    assert "operations_director" not in engine.actor("lin.tao").roles
    assert [d.id for d in engine.delegations("ma.chao")] == [grant.id]


def test_delegation_rules(engine: Engine, clock: Clock) -> None:
    later = clock.now + timedelta(days=1)
    with pytest.raises(NotPermitted, match="may not delegate"):
        engine.delegate("ma.chao", "chen.jing", actor="chen.jing", ends_at=later)
    admin = engine.delegate("ma.chao", "chen.jing", actor="han.bing", ends_at=later)
    assert admin.created_by == "han.bing"
    with pytest.raises(InvalidData, match="does not hold"):
        engine.delegate("ma.chao", "chen.jing", actor="ma.chao", ends_at=later, roles=["technology_director"])
    with pytest.raises(UsageError, match="end after it starts"):
        engine.delegate("ma.chao", "chen.jing", actor="ma.chao", ends_at=clock.now)


def test_a_delegate_for_the_submitter_may_not_approve(engine: Engine, clock: Clock) -> None:
    # A daily optimisation is the submitting lead's own decision (002 §二(二)1); a major reform is not.
    engine.delegate("ma.chao", "zhou.qiang", actor="ma.chao", ends_at=clock.now + timedelta(days=1))
    case_id = reform(engine)
    with pytest.raises(NotPermitted, match="separation of duties"):
        engine.fire(case_id, "approve", actor="zhou.qiang")


def test_reassign_is_for_the_roles_manager_or_an_administrator(engine: Engine) -> None:
    case_id = engine.start("content-review", {"title": "t", "origin": "original"}, actor="li.na").case.id
    with pytest.raises(NotPermitted, match="may not reassign"):
        engine.reassign(case_id, "wang.fang", actor="li.na")
    refused = engine.history(case_id)[-1]
    assert (refused.event, refused.outcome) == ("reassign", "refused")
    result = engine.reassign(case_id, "wang.fang", actor="chen.jing", comment="李娜休假")
    assert result.case.assignee == "wang.fang"
    assert result.record.role == "operations_manager"
    assert result.record.detail == {"from": None, "to": "wang.fang"}
    with pytest.raises(NotPermitted, match="does not hold content_specialist"):
        engine.reassign(case_id, "guo.hui", actor="han.bing")
    assert engine.reassign(case_id, "li.na", actor="han.bing").case.assignee == "li.na"
    assert engine.verify(case_id).ok


def test_tasks_list_what_waits_on_a_person_most_urgent_first(engine: Engine, clock: Clock) -> None:
    first = reform(engine)
    clock.advance(hours=1)
    second = reform(engine)
    daily = engine.start("tiered-approval", DAILY, actor="zhou.qiang").case.id
    engine.fire(daily, "submit", actor="zhou.qiang")
    mine = engine.tasks("ma.chao")
    assert [t.case.id for t in mine][:2] == [first, second]
    assert all("approve" in t.events for t in mine)
    assert daily not in [t.case.id for t in engine.tasks("ma.chao")]
    assert daily in [t.case.id for t in engine.tasks("wu.lei")]
    engine.fire(first, "approve", actor="ma.chao")
    assert first not in [t.case.id for t in engine.tasks("ma.chao")]
    assert first in [t.case.id for t in engine.tasks("guo.hui")]
    assert engine.tasks("fu.xiao") == []


def test_tasks_put_the_nearest_deadline_first(engine: Engine, clock: Clock) -> None:
    outage = {"incident_type": "system_outage", "summary": "支付系统崩溃"}
    old = engine.start("content-review", {"title": "a", "origin": "original"}, actor="li.na").case.id
    clock.advance(hours=2)
    urgent = engine.start("emergency-response", outage, actor="deng.chao").case.id
    engine.fire(urgent, "raise", actor="deng.chao")
    tasks = engine.tasks("deng.chao") + engine.tasks("cao.yang")
    urgent_task = next(t for t in tasks if t.case.id == urgent)
    assert urgent_task.deadline == "outage-pickup-15m"
    assert urgent_task.due_at == clock.now + timedelta(minutes=15)
    assert old not in [t.case.id for t in tasks]
    clock.advance(minutes=5)
    later = engine.start("emergency-response", outage, actor="deng.chao").case.id
    engine.fire(later, "raise", actor="deng.chao")
    both = {t.case.id: t for t in engine.tasks("deng.chao") + engine.tasks("cao.yang")}
    assert both[urgent].due_at is not None and both[later].due_at is not None
    assert both[urgent].due_at < both[later].due_at
    assert engine.tasks("han.bing") == []
