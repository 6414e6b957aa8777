"""What every benchmark shares: the repository on sys.path, temporary folders, timing, figures printed
with their ratio to a baseline measured in the same run, process memory, and a throwaway PostgreSQL
cluster (the logic of tests/conftest.py's `_Cluster`, without pytest, and durable by default).

Benchmarks never assert timing: a missed target is printed as MISSED, never raised.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from tests.helpers.pgcluster import PgCluster, postgres_bindir

if TYPE_CHECKING:
    from sopflow.engine.runtime import Engine

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
    from sopflow.engine.runtime import Engine

    engine = Engine(url)
    engine.deploy([MINI])
    return engine


# -- PostgreSQL ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def postgres(*, durable: bool = True) -> Iterator[str | None]:
    """A server URL without a database name, or None (with the reason printed) when none can be had.
    SOPFLOW_BENCH_POSTGRES names an existing server instead of starting one."""
    given = os.environ.get("SOPFLOW_BENCH_POSTGRES")
    if given:
        yield given.rstrip("/")
        return
    bindir = postgres_bindir()
    if bindir is None:
        note("SKIPPED: no PostgreSQL binaries in /usr/lib/postgresql/*/bin (apt-get install postgresql)")
        yield None
        return
    cluster = PgCluster(bindir, durable=durable)
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
