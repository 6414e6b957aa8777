"""Run time in-process: a worker fires deadlines and escalations; a fake clock stands in for waiting."""

import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sopflow.engine import Engine
from sopflow.engine.worker import ConsoleChannel, Worker

definitions = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("definitions")
database = Path(tempfile.mkdtemp()) / "cases.db"


class Clock:
    """An injectable clock: the engine and the worker read time only through it."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


clock = Clock()
with Engine(f"sqlite:///{database}", clock=clock) as sop:
    sop.deploy([definitions])
    case = sop.start(
        "emergency-response",
        {"incident_type": "system_outage", "summary": "支付系统崩溃：下单接口全部超时"},
        actor="deng.chao",
    ).case
    sop.fire(case.id, "raise", actor="deng.chao")  # routed to the first responder; 15 minutes to pick up
    worker = Worker(sop, channels=[ConsoleChannel(write=print)])
    print(worker.tick().total, "timers due at once")
    clock.now += timedelta(hours=2)
    report = worker.tick()
    print(report.fired, report.delivered)
    for deadline in sop.deadlines(case.id):
        print(deadline.describe(clock.now))
    print([o.case_id for o in sop.overdue()])
