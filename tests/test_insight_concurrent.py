"""Reports deriving the same cases at once, on PostgreSQL: each waits for the other's write instead of
colliding, so no driver message reaches the terminal and the figures are right."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from sopflow.engine.runtime import Engine
from tests.insight_history import FIXTURE, Clock, build


@pytest.fixture
def sop(database_url: str) -> Iterator[Engine]:
    clock = Clock()
    engine = Engine(database_url, clock=clock)
    engine.deploy([FIXTURE])
    build(engine, clock)
    for _ in range(40):
        engine.start("article", {"title": "more"}, actor="wu")
    try:
        yield engine
    finally:
        engine.close()


def test_concurrent_first_reports_derive_quietly(sop: Engine, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    failures: list[BaseException] = []

    def report() -> None:
        try:
            sop.report("article")
        except BaseException as exc:  # pragma: no cover - the assertion below names it
            failures.append(exc)

    for _ in range(6):
        with sop.store.engine.begin() as conn:
            for table in ("insight_progress", "insight_steps", "insight_spans"):
                conn.execute(text(f"DELETE FROM {table}"))
        threads = [threading.Thread(target=report) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        assert sop.report_check() == []
    assert [r.getMessage() for r in caplog.records if r.name.startswith("psycopg")] == []
