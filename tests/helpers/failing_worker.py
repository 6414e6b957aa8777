"""A worker process whose `score` handler always fails, doing automatic steps in a loop until it is killed.

Usage: python -m tests.helpers.failing_worker DATABASE_URL FIXTURE_FOLDER CALL_LOG
Prints `ready` once the engine is open. The handler appends the call's idempotency key to CALL_LOG, takes
a while, then raises, so that a kill lands between tries, during one, or between the last and its record.
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
        raise ConnectionError("scoring service down")

    engine.register_handler("score", score)
    worker = Worker(engine, lease=timedelta(seconds=1), channels=[ConsoleChannel(write=lambda _line: None)])
    print("ready", flush=True)
    while True:
        worker.tick()
        time.sleep(0.01)


if __name__ == "__main__":
    main()
