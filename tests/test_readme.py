"""The README's session and its embedding example run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _block(language: str, after: str) -> str:
    found = re.search(re.escape(after) + r".*?```" + language + r"\n(.*?)```", README, re.S)
    assert found, f"no ```{language} block after {after!r}"
    return found.group(1)


def test_the_cli_session_runs(tmp_path: Path) -> None:
    (tmp_path / "definitions").symlink_to(ROOT / "definitions")
    bindir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOPFLOW_")}
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    script = "set -e\n" + _block("sh", "A session")
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "is now in approved" in done.stdout
    assert "audit trail intact" in done.stdout
    assert "Traceback" not in done.stderr


def test_the_embedding_example_runs(tmp_path: Path) -> None:
    (tmp_path / "definitions").symlink_to(ROOT / "definitions")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", _block("python", "## Embedding")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "screening"
