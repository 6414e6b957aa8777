"""What every benchmark shares: the repository on sys.path, temporary folders, timing, figures printed
with their ratio to a baseline measured in the same run, process memory, and a throwaway PostgreSQL
cluster (the logic of tests/conftest.py's `_Cluster`, without pytest, and durable by default).

Benchmarks never assert timing: a missed target is printed as MISSED, never raised.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.runtime import Engine

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script from anywhere

MINI = ROOT / "tests" / "fixtures" / "mini"
DEFINITIONS = ROOT / "definitions"


@contextlib.contextmanager
def temp_dir(prefix: str = "sopflow-bench-") -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def header(title: str) -> None:
    print(f"\n== {title} ==", flush=True)


def note(text: str) -> None:
    print(f"   {text}", flush=True)


def per_second(fn: Callable[[int], None], count: int) -> float:
    """Run fn(i) for i in range(count); operations per second."""
    start = time.perf_counter()
    for i in range(count):
        fn(i)
    return count / (time.perf_counter() - start)


def median_ms(fn: Callable[[], object], rounds: int) -> float:
    runs = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - start) * 1000)
    return statistics.median(runs)


def verdict(ratio: float, target: float, *, at_least: bool) -> str:
    met = ratio >= target if at_least else ratio <= target
    sign = "≥" if at_least else "≤"
    return f"target {sign} {target:g}: {'met' if met else 'MISSED'}"


def compare(
    label: str,
    value: float,
    unit: str,
    base_label: str,
    base: float,
    *,
    target: float | None = None,
    at_least: bool = True,
) -> float:
    """Print a figure, its baseline and their ratio (value / base); returns the ratio."""
    ratio = value / base
    print(f"   {label:<44}{value:>12,.1f} {unit}", flush=True)
    print(f"   {base_label:<44}{base:>12,.1f} {unit}", flush=True)
    tail = "" if target is None else f"   ({verdict(ratio, target, at_least=at_least)})"
    print(f"   {'ratio':<44}{ratio:>12.2f} ×{tail}", flush=True)
    return ratio


def rss_mib() -> float:
    """This process's resident memory now (not the peak), in MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [float(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_since(before: tuple[float, float]) -> float:
    """How busy all the machine's cores were since `before` (from cpu_times), 0..1."""
    after = cpu_times()
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total else 0.0


def seed_engine(url: str) -> Engine:
    """An Engine on `url` with the mini definition and org deployed."""
    from engine.runtime import Engine

    engine = Engine(url)
    engine.deploy([MINI])
    return engine


# -- PostgreSQL ----------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    """A throwaway PostgreSQL cluster in a temporary folder, on a free loopback port.

    `durable=True` keeps PostgreSQL's defaults (fsync on, synchronous_commit on): a commit waits for the
    WAL to reach the disk, as in production. The test suite's cluster turns both off for speed."""

    def __init__(self, bindir: Path, *, durable: bool = True) -> None:
        self.bindir = bindir
        self.durable = durable
        self.folder = Path(tempfile.mkdtemp(prefix="sopflow-bench-pg-"))
        self.port = _free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root: run it as the Debian package's `postgres` user.
            pwd.getpwnam("postgres")
            shutil.chown(self.folder, "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, capture_output=True, cwd="/tmp", timeout=120)

    def start(self) -> str:
        data = self.folder / "data"
        self._run(str(self.bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c max_connections=200"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-w",
            "-l",
            str(self.folder / "log"),
            "start",
        )
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}"

    def stop(self) -> None:
        subprocess.run(
            [
                *self.as_user,
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.folder / "data"),
                "-m",
                "immediate",
                "stop",
            ],
            check=False,
            capture_output=True,
            cwd="/tmp",
            timeout=60,
        )
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def postgres(*, durable: bool = True) -> Iterator[str | None]:
    """A server URL without a database name, or None (with the reason printed) when none can be had.
    SOPFLOW_BENCH_POSTGRES names an existing server instead of starting one."""
    given = os.environ.get("SOPFLOW_BENCH_POSTGRES")
    if given:
        yield given.rstrip("/")
        return
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not bins:
        note("SKIPPED: no PostgreSQL binaries in /usr/lib/postgresql/*/bin (apt-get install postgresql)")
        yield None
        return
    cluster = PgCluster(Path(bins[-1]), durable=durable)
    try:
        url = cluster.start()
    except (subprocess.CalledProcessError, KeyError, OSError) as exc:
        cluster.stop()
        note(f"SKIPPED: could not start a PostgreSQL cluster: {exc}")
        yield None
        return
    try:
        yield url
    finally:
        cluster.stop()


def new_database(server: str) -> str:
    """A fresh, empty database on the server; its SQLAlchemy URL."""
    import psycopg

    name = "b_" + uuid.uuid4().hex[:12]
    with psycopg.connect(plain_url(server) + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{server}/{name}"


def plain_url(url: str) -> str:
    """The libpq form of a SQLAlchemy postgresql+psycopg URL."""
    return url.replace("postgresql+psycopg://", "postgresql://")
