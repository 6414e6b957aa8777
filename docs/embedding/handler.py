"""An automatic step done by your code: register a handler, and the worker calls it and moves the case on."""

import tempfile
from pathlib import Path

from sopflow.engine import Engine
from sopflow.engine.automatic import AutomaticCall
from sopflow.engine.worker import ConsoleChannel, Worker

examples = Path(__file__).resolve().parents[1] / "examples"
database = Path(tempfile.mkdtemp()) / "cases.db"
done: dict[str, float] = {}  # the screening service's own record of the work, by idempotency key


def screen(call: AutomaticCall) -> dict[str, float]:
    """Called by the worker with the case; the same `key` again means the same work: do it once."""
    if call.key not in done:
        done[call.key] = 80.0 if "秒杀" in call.data["title"] else 10.0
    return {"score": done[call.key]}


with Engine(f"sqlite:///{database}") as sop:
    sop.deploy([examples / "content-screening.yaml", examples / "org.yaml"])
    sop.register_handler("screen", screen)
    case = sop.start("content-screening", {"title": "双十一秒杀预告"}, actor="chen.jing").case
    sop.fire(case.id, "screen", actor="chen.jing")
    Worker(sop, channels=[ConsoleChannel(write=print)]).tick()
    screened = sop.case(case.id)
    print(screened.state, screened.data["risk_score"])
    print([(r.actor, r.event) for r in sop.history(case.id)][-1])
