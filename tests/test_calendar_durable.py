"""A deadline that counts working time under an org calendar with no working time: starting the case is
refused with a configuration error (exit 2) naming the calendar and the fix, and nothing is written, on
SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sopflow.engine.errors import ConfigurationError
from sopflow.engine.runtime import Engine
from tests.conftest import MINI, Clock

SLOW = """\
id: slow
version: 1
title: {zh: 慢, en: Slow}
initial: open
states:
  open:
    title: {zh: 开, en: Open}
    owner: employee
    on:
      finish: {to: closed, by: [$starter]}
  closed:
    title: {zh: 关, en: Closed}
    final: true
deadlines:
  - name: four-working-hours
    from: open
    until: [closed]
    within: 4h
    calendar: working
"""


def test_a_working_time_deadline_under_a_calendar_without_working_time_is_refused(
    database_url: str, clock: Clock, tmp_path: Path
) -> None:
    folder = tmp_path / "defs"
    folder.mkdir()
    org = (MINI / "org.yaml").read_text(encoding="utf-8")
    (folder / "org.yaml").write_text(org + "calendar:\n  working_days: []\n", encoding="utf-8")
    (folder / "slow.yaml").write_text(SLOW, encoding="utf-8")
    shutil.copy(MINI / "expense.yaml", folder)
    with Engine(database_url, clock=clock) as sop:
        sop.deploy([folder])
        with pytest.raises(ConfigurationError, match="no working time") as caught:
            sop.start("slow", {}, actor="alice")
        assert caught.value.exit_code == 2
        assert "working_days" in (caught.value.hint or "")
        assert sop.cases() == []
        # A definition without a working-time deadline still runs under that org.
        case = sop.start("expense", {"amount": 1, "purpose": "taxi"}, actor="alice").case
        assert [c.id for c in sop.cases()] == [case.id]
