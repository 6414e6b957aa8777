"""Benchmark of the guard language: our CEL guards against cel-python and simpleeval, and the worst guards the
checker allows over 256 KiB of data.

Run from the repository root: .venv/bin/python bench/guards.py
cel-python and simpleeval are optional (`.venv/bin/pip install cel-python simpleeval`): they are measured only
to compare, never a dependency of sopflow. Every ratio is theirs divided by ours, measured in the same run.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from sopflow.engine.definition import expressions  # noqa: E402
from sopflow.engine.definition.expressions import compile_guard  # noqa: E402

EXPRESSION = 'data.amount > 10000 && data.dept in ["ops", "tech"]'
PY_EXPRESSION = 'data["amount"] > 10000 and data["dept"] in ["ops", "tech"]'  # the same rule for simpleeval
SCHEMA = {
    "type": "object",
    "properties": {"amount": {"type": "number"}, "dept": {"type": "string"}, "title": {"type": "string"}},
}
DATA = {"amount": 25000.0, "dept": "ops", "title": "new office network"}
ACTOR = {"id": "li.wei", "roles": ["ops_lead"], "department": "ops"}
DIRECT_LOAD = """
import importlib.machinery, importlib.util
from pathlib import Path
d = Path(importlib.util.find_spec("cel").submodule_search_locations[0])
so = next(p for p in d.glob("cel.*") if p.suffix in (".so", ".pyd"))
loader = importlib.machinery.ExtensionFileLoader("cel.cel", str(so))
spec = importlib.util.spec_from_file_location("cel.cel", so, loader=loader)
module = importlib.util.module_from_spec(spec)
loader.exec_module(module)
"""
MAX_BYTES = expressions.MAX_DATA_BYTES


def per_call_us(fn: Callable[[], object], number: int) -> float:
    """Best of 5 rounds, in microseconds per call (the minimum is the least disturbed by other load)."""
    fn()
    return min(timeit.Timer(fn).repeat(repeat=5, number=number)) / number * 1e6


def import_ms(statement: str, rounds: int = 5) -> float:
    """Median time of `statement` in a fresh interpreter, timed inside it (interpreter start excluded)."""
    code = f"import time\nt = time.perf_counter()\n{statement}\nprint((time.perf_counter() - t) * 1000)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", code]
    runs = [
        float(subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout)
        for _ in range(rounds)
    ]
    return statistics.median(runs)


def ours() -> dict[str, float]:
    guard = compile_guard(EXPRESSION, data_schema=SCHEMA)
    return {
        "compile_us": per_call_us(lambda: compile_guard(EXPRESSION, data_schema=SCHEMA), 2000),
        "evaluate_us": per_call_us(lambda: guard.evaluate(data=DATA, payload={}, actor=ACTOR), 20000),
        "import_ms": import_ms(DIRECT_LOAD),
    }


def cel_python() -> dict[str, float] | None:
    try:
        import celpy
    except ImportError:
        return None
    env = celpy.Environment()
    program = env.program(env.compile(EXPRESSION))
    # the JSON → CEL conversion is part of each evaluation, as it is inside our extension
    return {
        "compile_us": per_call_us(lambda: env.program(env.compile(EXPRESSION)), 200),
        "evaluate_us": per_call_us(lambda: program.evaluate({"data": celpy.json_to_cel(DATA)}), 2000),
        "import_ms": import_ms("import celpy"),
    }


def simpleeval() -> dict[str, float] | None:
    try:
        from simpleeval import EvalWithCompoundTypes
    except ImportError:
        return None
    evaluator = EvalWithCompoundTypes(names={"data": DATA})
    parsed = evaluator.parse(PY_EXPRESSION)
    return {
        "compile_us": per_call_us(lambda: evaluator.parse(PY_EXPRESSION), 5000),
        "evaluate_us": per_call_us(lambda: evaluator.eval(PY_EXPRESSION, previously_parsed=parsed), 20000),
        "import_ms": import_ms("import simpleeval"),
    }


def comparison() -> None:
    print(f"guard: {EXPRESSION}")
    print("ratios: the candidate's figure divided by ours, measured in this run")
    base = ours()
    print(f"{'':40}{'compile µs':>18}{'evaluate µs':>18}{'import ms':>18}")
    print(f"{'sopflow (common-expression-language)':40}" + _cells(base, None))
    for name, measure in (("cel-python", cel_python), ("simpleeval", simpleeval)):
        figures = measure()
        print(f"{name:40}" + ("not installed" if figures is None else _cells(figures, base)))
    cel = expressions._cel()
    raw = per_call_us(lambda: cel.compile(EXPRESSION), 2000)
    print(f"{'  of our compile, CEL parsing alone':40}{raw:>18.1f}")
    print(f"{'import cel (the whole package)':40}{'':36}{import_ms('import cel'):>18.1f}")
    first = f"from engine.definition.expressions import compile_guard\ncompile_guard({EXPRESSION!r})"
    cold = import_ms(first)
    print(f"{'sopflow: import + first compile':40}{'':36}{cold:>18.1f}")


def _cells(figures: dict[str, float], base: dict[str, float] | None) -> str:
    cells = []
    for key in ("compile_us", "evaluate_us", "import_ms"):
        ratio = "" if base is None else f" (×{figures[key] / base[key]:.2f})"
        cells.append(f"{figures[key]:.1f}{ratio}".rjust(18))
    return "".join(cells)


# --- the worst allowed guards over 256 KiB ----------------------------------------------------------------


def fill(item: Any) -> list[Any]:
    """A list of copies of item whose compact JSON, inside {"l": [...]}, is just under MAX_BYTES."""
    step = len(json.dumps(item, separators=(",", ":"))) + 1
    return [item] * ((MAX_BYTES - 16) // step)


def worst_guards() -> dict[str, str]:
    reads = "[" + ",".join(["data.l"] * 32) + "] != []"
    joins = "(data.l+data.l+data.l+data.l+data.l) == (data.l+data.l+data.l+data.l+data.l)"
    copies = "data.l.all(x, [" + ",".join(["x"] * 27) + "] != [])"
    scan = "data.l.all(x, !(x in [" + ",".join(["99999"] * 27) + "]))"
    four = " && ".join(["data.l.all(x, [x,x,x,x,x] != [])"] * 4)
    return {
        "32 reads of the list": reads,
        "8 joins, 10 reads, then ==": joins,
        "all() building a 27-item list per item": copies,
        "all() scanning a 27-item literal per item": scan,
        "4 × all() building a 5-item list": four,
        "one all(), trivial body": "data.l.all(x, x != 0)",
        "true (the cost of handing the data over)": "true",
    }


def worst_case() -> None:
    shapes = {
        "ints": fill(7),
        "maps": fill({"a": 1, "b": "x"}),
        "lists": fill([1, 2]),
        "strings": fill("abcdefgh"),
    }
    schema = {"type": "object", "properties": {"l": {"type": "array"}}}
    print(f"\nworst allowed guards over {MAX_BYTES // 1024} KiB of compact JSON")
    print("ms per evaluation, median of 3; (n) = items in the list")
    print(f"{'':44}" + "".join(f"{name} ({len(items)})".rjust(16) for name, items in shapes.items()))
    worst = (0.0, "", "")
    for label, text in worst_guards().items():
        guard = compile_guard(text, data_schema=schema)  # raises if the checker would not allow it
        row = []
        for shape, items in shapes.items():
            ms = _median_ms(lambda g=guard, d={"l": items}: g.evaluate(data=d, payload={}, actor={}))
            row.append(f"{ms:16.1f}")
            worst = max(worst, (ms, label, shape))
        print(f"{label:44}" + "".join(row))
    print(f"worst: {worst[1]} over {worst[2]}: {worst[0]:.0f} ms")


def rejected_constructs() -> None:
    """Why the checker forbids them: timed straight on the CEL module over a list of only 4,000 ints."""
    cel = expressions._cel()
    data = {"data": {"l": list(range(4000))}}
    print("\nconstructs the checker rejects, timed directly over a list of 4,000 ints (ms)")
    for label, text in {
        "map() (quadratic in this CEL)": "size(data.l.map(x, x)) > 0",
        "filter() (quadratic in this CEL)": "size(data.l.filter(x, true)) > 0",
        "all() re-scanning the data per item": "data.l.all(x, x in data.l)",
        "allowed, for contrast: all()": "data.l.all(x, x >= 0)",
    }.items():
        program = cel.compile(text)
        print(f"  {label:40}{_median_ms(lambda p=program: p.execute(data)):10.1f}")


def _median_ms(fn: Callable[[], object], rounds: int = 3) -> float:
    runs = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - start) * 1000)
    return statistics.median(runs)


if __name__ == "__main__":
    comparison()
    worst_case()
    rejected_constructs()
