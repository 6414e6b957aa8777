"""The programs in docs/embedding.md are files in docs/embedding/, shown verbatim, and they run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "embedding.md"
BLOCK = re.compile(r"```python\n# file: (\S+)\n(.*?)```", re.S)


def blocks() -> list[tuple[str, str]]:
    return BLOCK.findall(DOC.read_text(encoding="utf-8"))


def test_every_example_file_is_shown_verbatim() -> None:
    shown = dict(blocks())
    files = {f"docs/embedding/{p.name}" for p in (ROOT / "docs" / "embedding").glob("*.py")}
    assert set(shown) == files
    for name, body in shown.items():
        assert body == (ROOT / name).read_text(encoding="utf-8"), name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "docs/embedding/quickstart.py",
            ["major_reform_approval", "refused:", "approved False", "audit records verified"],
        ),
        ("docs/embedding/worker.py", ["0 timers due at once", "OVERDUE"]),
        (
            "docs/embedding/access.py",
            [
                "a colleague reads: 用户小王",
                "customer service is told: case 1 does not exist",
                "an analyst reads a token: True 64",
                "cases du.juan may view: 0",
                "access log: 1 du.juan view case 1 refused",
                "verified: True",
            ],
        ),
        ("docs/embedding/retry.py", ["replayed: True", "same step: True True", "with other content"]),
        ("docs/embedding/handler.py", ["review 80.0", "automatic_done"]),
        (
            "docs/embedding/lifecycle.py",
            ["the process is now called", "moved 10, skipped 0", "migrated from version", "verified: True"],
        ),
        (
            "docs/embedding/report.py",
            [
                "manual review median 100 min over 3 cases, baseline 125 min (industry report 2026), -20%",
                "flagged: none",
                "derived figures equal the trail: True",
            ],
        ),
    ],
)
def test_example_runs(name: str, expected: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / name), str(ROOT / "definitions")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for text in expected:
        assert text in done.stdout, done.stdout
