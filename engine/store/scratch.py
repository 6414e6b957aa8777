"""Scratch databases for `sopflow test --db URL`: each scenario gets an empty place of its own inside the
database named, so that no scenario sees another's cases (who is least loaded, which timers are due) and
the database named is left as it was.

PostgreSQL: a schema per scenario (`sopflow_test_…`), reached through the connection's `search_path`,
dropped with everything in it when the scenario ends. SQLite: a file per scenario beside the file named,
deleted when the scenario ends. Needs the right to create schemas (PostgreSQL) or files (SQLite) there.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from sopflow.engine.store.database import connect_or_explain, parse_url


class Scratch:
    """Makes and removes one scratch place per scenario in the database at `url`."""

    def __init__(self, url: str) -> None:
        self.url = parse_url(url)
        self.run = uuid.uuid4().hex[:10]
        self._count = 0

    def make(self) -> str:
        """The URL of a new, empty place; `remove` it when done."""
        self._count += 1
        name = f"sopflow_test_{self.run}_{self._count}"
        if self.url.get_backend_name() == "sqlite":
            base = Path(self.url.database or "sopflow-test.db")
            return str(self.url.set(database=str(base.with_name(f"{base.name}.{name}"))))
        engine = create_engine(self.url)
        try:
            with connect_or_explain(engine) as conn, conn.begin():
                conn.execute(text(f'CREATE SCHEMA "{name}"'))
        finally:
            engine.dispose()
        return self.url.update_query_dict({"options": f"-csearch_path={name}"}).render_as_string(
            hide_password=False
        )

    def remove(self, url: str) -> None:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{parsed.database}{suffix}").unlink(missing_ok=True)
            return
        name = str(parsed.query["options"]).removeprefix("-csearch_path=")
        engine = create_engine(self.url)
        try:
            with connect_or_explain(engine) as conn, conn.begin():
                conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
        finally:
            engine.dispose()
