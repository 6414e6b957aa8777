"""A process that starts and advances cases of the mini definition in a loop until it is killed.

Usage: python -m tests.helpers.crash_worker DATABASE_URL FIXTURE_FOLDER
Prints `ready` once the engine is open, then fires as fast as it can.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sopflow.engine.errors import SopflowError
from sopflow.engine.runtime import Engine


def main() -> None:
    url, folder = sys.argv[1], Path(sys.argv[2])
    engine = Engine(url)
    engine.deploy([folder])
    print("ready", flush=True)
    n = 0
    while True:
        n += 1
        try:
            case = engine.start("expense", {"amount": n % 700, "purpose": f"crash {n}"}, actor="alice").case
            engine.fire(case.id, "submit", actor="alice")
            engine.fire(case.id, "send_back", actor="mia", comment="again")
            engine.fire(case.id, "submit", actor="alice")
        except SopflowError as exc:
            print(f"refused: {exc}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
