"""A worker process for the exactly-once soak test: ticks until no timer is due, then exits.

Usage: python -m tests.helpers.timer_worker DATABASE_URL LEASE_SECONDS
"""

from __future__ import annotations

import sys
from datetime import timedelta

from sopflow.engine.runtime import Engine
from sopflow.engine.worker import ConsoleChannel, Worker


def main() -> None:
    url, lease = sys.argv[1], float(sys.argv[2])
    engine = Engine(url)
    worker = Worker(
        engine, lease=timedelta(seconds=lease), batch=20, channels=[ConsoleChannel(write=lambda _line: None)]
    )
    print("ready", flush=True)
    while True:
        worker.tick(deliver=False)
        if engine.store.next_due() is None:
            return


if __name__ == "__main__":
    main()
