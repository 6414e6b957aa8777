"""A worker process doing automatic steps (the `score` handler) in a loop until it is killed.

Usage: python -m tests.helpers.automatic_worker DATABASE_URL FIXTURE_FOLDER DELIVERY_LOG
Prints `ready` once the engine is open. The handler appends the call's idempotency key to DELIVERY_LOG,
then takes a while, so that a kill often lands between the call and the commit of its outcome.
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from pathlib import Path

from sopflow.engine.automatic import AutomaticCall
from sopflow.engine.runtime import Engine
from sopflow.engine.worker import ConsoleChannel, Worker


def main() -> None:
    url, folder, log = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    engine = Engine(url)
    engine.deploy([folder])

    def score(call: AutomaticCall) -> dict[str, int]:
        with log.open("a", encoding="utf-8") as f:
            f.write(call.key + "\n")
        time.sleep(0.05)
        return {"value": 1}

    engine.register_handler("score", score)
    worker = Worker(engine, lease=timedelta(seconds=1), channels=[ConsoleChannel(write=lambda _line: None)])
    print("ready", flush=True)
    while True:
        worker.tick()
        time.sleep(0.01)


if __name__ == "__main__":
    main()
