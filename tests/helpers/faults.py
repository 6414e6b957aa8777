"""Faults for the tests: a PostgreSQL cluster that can be restarted, crashed and stopped, a process that
holds SQLite's write lock, and the `sopflow` command run as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers.pgcluster import PgCluster

ROOT = Path(__file__).resolve().parent.parent.parent
SOPFLOW = str(Path(sys.executable).parent / "sopflow")


class FaultyCluster(PgCluster):
    """A throwaway cluster of its own (never the suite's shared one), to restart and crash."""

    def __init__(self, bindir: Path) -> None:
        super().__init__(bindir, durable=False)

    def _ctl(self, *args: str) -> None:
        data = str(self.folder / "data")
        self._run(str(self.bindir / "pg_ctl"), "-D", data, "-l", str(self.folder / "log"), *args)

    def restart_fast(self) -> None:
        """`pg_ctl restart -m fast`: every connection is ended ("terminating connection due to
        administrator command") and the server comes back."""
        self._ctl("-m", "fast", "-w", "restart")

    def crash(self) -> None:
        """`pg_ctl stop -m immediate`: the server dies without a clean shutdown (recovery on start)."""
        self._ctl("-m", "immediate", "-w", "stop")

    def stop_fast(self) -> None:
        self._ctl("-m", "fast", "-w", "stop")

    def start_again(self) -> None:
        # The options of the first start again: after `stop -m immediate`, pg_ctl would start the server
        # on its default port and socket folder.
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c max_connections=200"
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._ctl("-o", options, "-w", "start")


def spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """A process of this Python (`-m module ...`) or of the `sopflow` command (`sopflow ...`)."""
    command = [SOPFLOW, *args[1:]] if args[0] == "sopflow" else [sys.executable, "-m", *args]
    full = {k: v for k, v in os.environ.items() if not k.startswith("SOPFLOW_")}
    full["PYTHONPATH"] = str(ROOT)
    full.update(env or {})
    return subprocess.Popen(
        command, cwd=ROOT, env=full, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def sopflow(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `sopflow ARGS` to its end."""
    process = spawn("sopflow", *args)
    out, err = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def clean(stderr: str) -> None:
    """What the issue asks of every fault: one clear message, never a traceback."""
    assert "Traceback" not in stderr, stderr
    assert "Exception during reset" not in stderr, stderr
    assert "internal error" not in stderr, stderr
