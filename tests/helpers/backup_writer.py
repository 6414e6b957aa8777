"""One of several processes that keep starting and moving cases while a backup is taken.

Usage: python -m tests.helpers.backup_writer DATABASE_URL STOP_FILE
Prints `ready` after its first case, then starts and submits expense claims until STOP_FILE exists, and
prints how many cases it started.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sopflow.engine.errors import DatabaseUnavailable
from sopflow.engine.runtime import Engine


def main() -> None:
    url, stop = sys.argv[1:3]
    engine = Engine(url)
    started = 0
    while not Path(stop).exists():
        try:
            case = engine.start("expense", {"amount": 100, "purpose": "taxi"}, actor="alice").case
            engine.fire(case.id, "submit", actor="alice")
        except DatabaseUnavailable:  # a lock held past the busy timeout: try again
            continue
        started += 1
        if started == 1:
            print("ready", flush=True)
    engine.close()
    print(started, flush=True)


if __name__ == "__main__":
    main()
