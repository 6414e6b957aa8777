"""Benchmark: `sopflow test` on every seed scenario file (definitions/*.test.yaml).

    .venv/bin/python bench/scenarios.py            # three runs of the command, about 30 s
    .venv/bin/python bench/scenarios.py --quick    # one run

- The command as the before-stop check runs it, `sopflow test definitions`, in a subprocess (start-up and
  imports included), against its 40-second budget on this 2-core machine (target: a quarter of it).
- In process: checking the scenario files (schema, definition, org, meaning), then running them; the time
  per scenario (median and slowest), against the same scenarios' fire steps walked through the in-memory
  `Simulation` (no database, no timers): what a real engine and an empty database per scenario cost.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _harness import DEFINITIONS, ROOT, compare, header, note

from sopflow.engine.compile import CompiledDefinition
from sopflow.engine.definition.model import Definition, Org
from sopflow.engine.errors import SopflowError
from sopflow.engine.scenario.load import load_scenario_file, scenario_files
from sopflow.engine.scenario.model import Fire, ScenarioFile
from sopflow.engine.scenario.run import run_files
from sopflow.engine.simulate import Simulation

BUDGET_S = 40.0
SOPFLOW = Path(sys.executable).parent / "sopflow"


def command_seconds(rounds: int) -> float:
    runs = []
    for _ in range(rounds):
        begun = time.perf_counter()
        done = subprocess.run(
            [str(SOPFLOW), "test", str(DEFINITIONS)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        runs.append(time.perf_counter() - begun)
        if done.returncode != 0:
            print(done.stdout[-2000:], done.stderr[-2000:])
            raise SystemExit("sopflow test definitions failed")
        note(done.stdout.splitlines()[-1])
    return statistics.median(runs)


def simulated_seconds(loaded: list[tuple[ScenarioFile, Definition, Org]]) -> float:
    """The fire steps of every scenario through `Simulation`, up to each one's first clock step."""
    begun = time.perf_counter()
    for files, definition, org in loaded:
        compiled = CompiledDefinition(definition)
        for scenario in files.scenarios:
            sim = Simulation(compiled, org)
            try:
                case = sim.start(scenario.start.actor, scenario.start.data)
            except SopflowError:
                continue
            for step in scenario.steps:
                if not isinstance(step.action, Fire):
                    break
                with contextlib.suppress(SopflowError):
                    sim.fire(case, step.action.actor, step.action.event, step.action.payload)
    return time.perf_counter() - begun


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one run of the command instead of three")
    args = parser.parse_args()

    header("sopflow test definitions (a subprocess, as the before-stop check runs it)")
    wall = command_seconds(1 if args.quick else 3)
    compare(
        "sopflow test definitions",
        wall,
        "s",
        "the check's budget",
        BUDGET_S,
        target=0.25,
        at_least=False,
    )

    header("in process: check, then run every seed scenario")
    begun = time.perf_counter()
    loaded = [load_scenario_file(p) for p in scenario_files([DEFINITIONS])]
    checked = time.perf_counter() - begun
    report = run_files([(files, org) for files, _definition, org in loaded])
    times = [r.seconds * 1000 for r in report.results]
    steps = sum(len(s.steps) + 1 for files, _d, _o in loaded for s in files.scenarios)
    note(f"{len(loaded)} scenario files, {len(report.results)} scenarios, {steps} steps (starts included)")
    note(f"checking the files: {checked * 1000:,.0f} ms")
    note(f"running them: {report.seconds * 1000:,.0f} ms ({report.passed} passed, {report.failed} failed)")
    note(f"per scenario: median {statistics.median(times):.1f} ms, slowest {max(times):.1f} ms")
    simulated = simulated_seconds(loaded)
    compare(
        "run, per scenario",
        report.seconds * 1000 / len(report.results),
        "ms",
        "fire steps in Simulation, per scenario",
        simulated * 1000 / len(report.results),
    )


if __name__ == "__main__":
    main()
