"""A history of the `article` process (tests/fixtures/insight) where every figure is known by
construction: the clock is moved by hand, each duration below is written beside its step.

Calendar: UTC, Monday to Friday 09:00-18:00, Wednesday 2026-03-04 a holiday. Monday is 2026-03-02.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sopflow.engine.errors import NotPermitted
from sopflow.engine.runtime import Engine
from sopflow.engine.worker import ConsoleChannel, Worker

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "insight"

H = 3600.0

REVIEW_WALL = sorted([1.5 * H, 1 * H, 17 * H, 1 * H, 1 * H, 40 * H])
"""Every visit of `review`: case 1 1h30m; case 2 1h (sent back) and 17h (Monday 17:00 to Tuesday 10:00);
case 3 1h (rejected); case 5 3h less 2h suspended; case 6 40h over the holiday."""
REVIEW_WORKING = sorted([1.5 * H, 1 * H, 2 * H, 1 * H, 1 * H, 1 * H])
"""The same visits in working time: case 2's second is 17:00-18:00 and 09:00-10:00; case 6's is Tuesday
17:30-18:00 and Thursday 09:00-09:30 (Wednesday is a holiday)."""
CYCLES = sorted([4 * H, 22 * H, 2 * H])
"""The closed cases: 1 (archived), 2 (archived) and 3 (rejected)."""


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def at(self, day: int, hour: int, minute: int = 0) -> None:
        self.now = datetime(2026, 3, day, hour, minute, tzinfo=UTC)


def build(sop: Engine, clock: Clock) -> dict[str, Any]:
    """Walk six cases; the ids by name."""
    worker = Worker(sop, channels=[ConsoleChannel(write=lambda _line: None)])
    ids: dict[str, Any] = {}
    clock.at(2, 9)
    ids["c1"] = c1 = sop.start("article", {"title": "a"}, actor="wu").case.id
    clock.at(2, 10)
    sop.fire(c1, "submit", actor="wu")  # draft 1h
    clock.at(2, 11, 30)
    sop.fire(c1, "approve", actor="ed")  # review 1h30m, the deadline met
    clock.at(2, 12)
    sop.fire(c1, "correct", actor="wu")  # an error
    clock.at(2, 13)
    sop.fire(c1, "rate", actor="ed", payload={"csat": 5})  # published 1h30m
    clock.at(2, 14)
    ids["c2"] = c2 = sop.start("article", {"title": "b"}, actor="xu").case.id
    clock.at(2, 15)
    sop.fire(c2, "submit", actor="xu")
    clock.at(2, 16)
    sop.fire(c2, "send_back", actor="ed")  # a send-back
    clock.at(2, 17)
    sop.fire(c2, "submit", actor="xu")  # a new 2h span (restart: on_reentry)
    clock.at(2, 19)
    worker.tick(clock.now)  # breached, rung 1
    clock.at(2, 20)
    worker.tick(clock.now)  # rung 2
    clock.at(3, 10)
    sop.fire(c2, "approve", actor="ed")
    clock.at(3, 11)
    sop.fire(c2, "complain", actor="ed")  # a complaint
    clock.at(3, 12)
    sop.fire(c2, "rate", actor="ed", payload={"csat": 2})
    clock.at(3, 10)
    ids["c3"] = c3 = sop.start("article", {"title": "c"}, actor="wu").case.id
    clock.at(3, 11)
    sop.fire(c3, "submit", actor="wu")
    clock.at(3, 11, 30)
    with contextlib.suppress(NotPermitted):
        sop.fire(c3, "approve", actor="wu")  # refused, and recorded
    clock.at(3, 12)
    sop.fire(c3, "reject_article", actor="ed")  # a rejection
    clock.at(3, 9)
    ids["c4"] = sop.start("article", {"title": "d"}, actor="xu").case.id  # stays open in draft
    clock.at(5, 9)
    ids["c5"] = c5 = sop.start("article", {"title": "e"}, actor="wu").case.id
    clock.at(5, 10)
    sop.fire(c5, "submit", actor="wu")
    clock.at(5, 10, 30)
    sop.suspend(c5, actor="root", reason="waiting for the author")
    clock.at(5, 12, 30)
    sop.resume(c5, actor="root")
    clock.at(5, 13)
    sop.fire(c5, "approve", actor="ed")
    clock.at(3, 17)
    ids["c6"] = c6 = sop.start("article", {"title": "f"}, actor="wu").case.id
    clock.at(3, 17, 30)
    sop.fire(c6, "submit", actor="wu")  # draft 30m
    clock.at(5, 9, 30)
    sop.fire(c6, "approve", actor="ed")
    clock.at(6, 9)
    return ids
