"""One of several processes that fire the same event on the same case at the same moment.

Usage: python -m tests.helpers.race_worker DATABASE_URL CASE_ID EVENT USER EXPECT_VERSION GO_FILE
Waits until GO_FILE exists, fires once, prints `ok` or the error kind.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from sopflow.engine.errors import SopflowError
from sopflow.engine.runtime import Engine


def main() -> None:
    url, case_id, event, user, version, go = sys.argv[1:7]
    engine = Engine(url)
    engine.case(int(case_id))
    print("ready", flush=True)
    while not Path(go).exists():
        time.sleep(0.001)
    try:
        expect = int(version) if version != "-" else None
        engine.fire(int(case_id), event, actor=user, expect_version=expect)
        print("ok", flush=True)
    except SopflowError as exc:
        print(exc.kind, flush=True)


if __name__ == "__main__":
    main()
