"""A process that starts fan-out cases and fires their branches in a loop until it is killed.

Usage: python -m tests.helpers.branch_worker DATABASE_URL FIXTURE_FOLDER
Prints `ready` once the engine is open; each case takes `b.b1` then `c.c1`, the step that completes the
join (two branches of three), so that a kill often lands in the transaction of a join.
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
    while True:
        try:
            case = engine.start("fanout", {}, actor="bob").case
            engine.fire(case.id, "b.b1", actor="bob")
            engine.fire(case.id, "c.c1", actor="bob")
        except SopflowError as exc:
            print(f"refused: {exc}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
