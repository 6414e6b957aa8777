"""An embedding process that writes steps in a loop through a database outage, until SIGTERM.

Usage: python -m tests.helpers.outage_writer DATABASE_URL
Prints `ready`, then starts and answers cases of the ping definition as fast as it can; a
write the database could not take (unavailable, or an unknown outcome) is counted and tried later. On
SIGTERM it prints `written N failed M` and exits 0. Its stderr must stay free of tracebacks.
"""

from __future__ import annotations

import signal
import sys
import time

from sopflow.engine.errors import SopflowError
from sopflow.engine.runtime import Engine


def main() -> None:
    url = sys.argv[1]
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopping.append(signum))
    engine = Engine(url)  # opened before the fault; an embedding service that starts during one retries
    print("ready", flush=True)
    written = failed = 0
    while not stopping:
        try:
            case = engine.start("ping", {"n": written}, actor="alice").case
            engine.fire(case.id, "reply", actor="alice")
            written += 1
        except SopflowError as exc:
            failed += 1
            if failed == 1 or failed % 50 == 0:
                print(f"not written: {exc.message}", file=sys.stderr, flush=True)
            time.sleep(0.05)
    engine.close()
    print(f"written {written} failed {failed}", flush=True)


if __name__ == "__main__":
    main()
