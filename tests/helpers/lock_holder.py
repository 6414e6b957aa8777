"""Holds SQLite's write lock on a database file, as an outside tool in a write transaction would.

Usage: python -m tests.helpers.lock_holder DATABASE_FILE SECONDS
Prints `held` once it has the lock, keeps it SECONDS (or until killed), then lets it go.
"""

from __future__ import annotations

import sqlite3
import sys
import time


def main() -> None:
    path, seconds = sys.argv[1], float(sys.argv[2])
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("BEGIN IMMEDIATE")
    print("held", flush=True)
    time.sleep(seconds)
    conn.rollback()
    conn.close()
    print("released", flush=True)


if __name__ == "__main__":
    main()
