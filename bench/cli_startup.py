"""Benchmark: how long the `sopflow` command takes to start, against importing its libraries.

    .venv/bin/python bench/cli_startup.py            # median of 15 runs each (about 30 s)
    .venv/bin/python bench/cli_startup.py --quick    # median of 7

SETUP, not measured: a SQLite database in a temporary folder with the shipped definitions and org
deployed and one content-review case started and moved twice (the demo's first steps).

Measured, wall time of a fresh process, median of the runs (interleaved, so that the machine's other
load falls on both sides alike); ratio = sopflow / baseline:
- `sopflow --db … show CASE` vs `python -c "import click, sqlalchemy, yaml, jsonschema, transitions"`
  (what any command that opens a database and loads a definition must import at the least);
  `show` with `--as USER` (which also works out what that person may do) is shown too.
- `sopflow --help` vs `python -c "import click"`.
Then the biggest imports of `sopflow show` from `python -X importtime`.

Bytecode: this machine sets PYTHONDONTWRITEBYTECODE, which would make every run compile sopflow's own
sources (an installed package has its .pyc files). The runs use a private PYTHONPYCACHEPREFIX in the
temporary folder, warmed up first, so both sides load compiled bytecode, as an installation does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _harness import DEFINITIONS, compare, header, note, temp_dir

from sopflow.engine.runtime import Engine

BASE_IMPORTS = "import click, sqlalchemy, yaml, jsonschema, transitions"


def seed(folder: Path) -> tuple[str, int]:
    """SETUP: a database with the shipped definitions and one case; its URL and the case id."""
    from sopflow.cli.demo import CONTENT, CONTENT_STEPS

    url = f"sqlite:///{folder / 'cli.db'}"
    with Engine(url) as engine:
        engine.deploy([DEFINITIONS])
        case_id = engine.start("content-review", CONTENT, actor="li.na").case.id
        for user, event, payload, comment in CONTENT_STEPS[:2]:
            engine.fire(case_id, event, actor=user, payload=payload, comment=comment)
    return url, case_id


def environment(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "SOPFLOW_DB")}
    env["PYTHONPYCACHEPREFIX"] = str(folder / "pycache")
    env.pop("SOPFLOW_USER", None)
    return env


def wall_ms(command: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(command, env=env, cwd=cwd, check=True, capture_output=True)
    return (time.perf_counter() - start) * 1000


def medians(commands: dict[str, list[str]], env: dict[str, str], cwd: Path, runs: int) -> dict[str, float]:
    for command in commands.values():  # warm up: bytecode, the OS's file cache
        for _ in range(2):
            wall_ms(command, env, cwd)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            times[name].append(wall_ms(command, env, cwd))
    return {name: statistics.median(values) for name, values in times.items()}


def import_costs(command: list[str], env: dict[str, str], cwd: Path, least_ms: float, depth: int) -> None:
    """The import tree of a command, pruned to the modules that took at least `least_ms` (cumulative), down
    to `depth` levels (one run after a warm-up, so only indicative)."""
    subprocess.run(
        [sys.executable, "-X", "importtime", *command], env=env, cwd=cwd, capture_output=True, check=True
    )
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *command],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    rows: list[tuple[int, float, float, str]] = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        own, cumulative, name = line.removeprefix("import time:").split("|")
        level = (len(name) - len(name.lstrip()) - 1) // 2
        rows.append((level, int(cumulative) / 1000, int(own) / 1000, name.strip()))
    note(f"total {sum(r[2] for r in rows):.0f} ms of imports; cumulative ms (own ms), children indented")
    for level, cumulative, own, name in reversed(rows):  # importtime prints children before parents
        if cumulative >= least_ms and level <= depth:
            note(f"  {'  ' * level}{name} {cumulative:.1f} ({own:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="median of 7 runs instead of 15")
    parser.add_argument("--runs", type=int, help="runs per command")
    args = parser.parse_args()
    runs = args.runs or (7 if args.quick else 15)
    sopflow = str(Path(sys.executable).with_name("sopflow"))
    python = sys.executable
    with temp_dir() as folder:
        url, case_id = seed(folder)
        env = environment(folder)
        commands = {
            "show": [sopflow, "--db", url, "show", str(case_id)],
            "show --as": [sopflow, "--db", url, "--as", "wang.fang", "show", str(case_id)],
            "imports": [python, "-c", BASE_IMPORTS],
            "help": [sopflow, "--help"],
            "click": [python, "-c", "import click"],
        }
        header(f"CLI start-up, wall time of a fresh process, median of {runs} runs")
        got = medians(commands, env, folder, runs)
        compare("sopflow show CASE", got["show"], "ms", "python -c 'import click, sqlalchemy, …'",
                got["imports"], target=1.0, at_least=False)  # fmt: skip
        note(f"sopflow --as wang.fang show CASE: {got['show --as']:.0f} ms "
             f"(×{got['show --as'] / got['imports']:.2f} the imports)")  # fmt: skip
        compare("sopflow --help", got["help"], "ms", "python -c 'import click'", got["click"],
                target=2.0, at_least=False)  # fmt: skip
        header("what `sopflow show CASE` imports (python -X importtime, modules of 8 ms or more)")
        import_costs(commands["show"], env, folder, 8.0, 4)


if __name__ == "__main__":
    main()
