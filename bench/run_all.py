"""Run every benchmark, in quick mode unless told otherwise, and list the targets met and missed.

    .venv/bin/python bench/run_all.py             # quick mode (`make bench`), a few minutes
    .venv/bin/python bench/run_all.py --full      # the default sizes of each benchmark
    .venv/bin/python bench/run_all.py --no-postgres

Each benchmark runs in its own process, one after the other (never two at once: they would time each
other). Nothing here asserts: a missed target is reported, and the exit code is 0 unless a benchmark
crashed. bench/guards.py (the guard language) is run too.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = (
    "durable",
    "inmemory",
    "listing",
    "cli_startup",
    "validate",
    "timers",
    "guards",
    "scenarios",
    "lifecycle",
    "access",
)
POSTGRES_ONLY = ("timers",)
NO_QUICK_FLAG = ("guards",)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full", action="store_true", help="default sizes instead of --quick")
    parser.add_argument("--no-postgres", action="store_true", help="skip what needs PostgreSQL")
    parser.add_argument("only", nargs="*", help="run only these benchmarks (names without .py)")
    args = parser.parse_args()
    chosen = args.only or list(BENCHMARKS)
    verdicts: list[str] = []
    failed: list[str] = []
    started = time.perf_counter()
    for name in chosen:
        if args.no_postgres and name in POSTGRES_ONLY:
            continue
        command = [sys.executable, str(HERE / f"{name}.py")]
        if not args.full and name not in NO_QUICK_FLAG:
            command.append("--quick")
        if args.no_postgres and name == "durable":
            command.append("--no-postgres")
        print(f"\n######## {name}: {' '.join(command[1:])}", flush=True)
        begun = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        print(done.stdout, end="", flush=True)
        if done.returncode != 0:
            print(done.stderr, end="", file=sys.stderr, flush=True)
            failed.append(name)
        print(f"######## {name}: {time.perf_counter() - begun:.0f} s", flush=True)
        section = ""
        for line in done.stdout.splitlines():
            if line.startswith("== "):
                section = line.strip("= ").strip()
            elif "target" in line and ("met" in line or "MISSED" in line):
                ratio = line.split()[1]
                verdict = line.rsplit(":", 1)[1].strip(" )")
                target = line[line.index("target") :].split(":")[0]
                verdicts.append(f"{name:<12} {verdict:<7} ×{ratio:<7} {target:<14} {section}")
    print(f"\n######## summary ({time.perf_counter() - started:.0f} s in all)")
    for line in verdicts:
        print(line)
    if failed:
        print(f"crashed: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
