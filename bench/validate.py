"""Benchmark: checking definitions. All of definitions/, and generated definitions of 500 to 4,000 states,
through `engine.definition.validate.validate_paths` (read, schema, build, meaning: what `sopflow validate`
and `deploy` run).

    .venv/bin/python bench/validate.py            # about 15 s
    .venv/bin/python bench/validate.py --quick    # up to 2,000 states, one run each

- definitions/: validate_paths against parsing the same texts with PyYAML's safe loader (libyaml's
  CSafeLoader when present, as the engine uses; ratio = ours / theirs): what checking costs on top of
  parsing.
- Generated definitions (with the mini org): a chain of states, each with `next` and `back` events, every
  fifth `next` guarded by CEL with an unguarded alternative, every tenth state with a timeout, and a
  deadline over the whole chain. Time per state at each size, and its ratio to the time per state at
  500 states: a ratio near 1 at every size is linear growth. The shape is kept lean (about 23 YAML nodes
  a state) because the loader refuses files of more than 100,000 nodes (`Limits.max_nodes`): this shape
  fits up to about 4,500 states; one with an `explain` and a `by` list on every event stops near 2,400.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time

import yaml
from _harness import DEFINITIONS, MINI, compare, header, note, temp_dir

from sopflow.engine.definition.validate import validate_paths


def generated(states: int) -> str:
    """A valid definition of `states` states (the last one final)."""
    lines = [
        "# yaml-language-server: $schema=../schemas/definition.schema.json",
        f"id: chain-{states}",
        "version: 1",
        f"title: {{zh: 长流程 {states}, en: Chain of {states}}}",
        "data:",
        "  type: object",
        "  required: [amount]",
        "  properties:",
        "    amount: {type: number, minimum: 0, description: How much.}",
        "    note: {type: string, description: A note.}",
        "initial: s0",
        "states:",
    ]
    for i in range(states - 1):
        lines += [
            f"  s{i}:",
            f"    title: {{zh: 步骤{i}, en: Step {i}}}",
            "    owner: employee",
        ]
        if i % 10 == 5:
            lines.append("    timeout: {after: 2d, fire: back}" if i else "")
        lines.append("    on:")
        if i % 5 == 0:
            lines += [
                "      next:",
                f"        - {{to: s{i + 1}, when: 'data.amount > {i}'}}",
                f"        - {{to: s{i + 1}, by: [manager]}}",
            ]
        else:
            lines.append(f"      next: {{to: s{i + 1}}}")
        lines.append(f"      back: {{to: s{max(i - 1, 0)}}}")
    lines += [
        f"  s{states - 1}:",
        "    title: {zh: 完成, en: Done}",
        "    final: true",
        "deadlines:",
        f"  - {{name: whole-chain, from: s1, until: [s{states - 1}], within: 30d,",
        "     escalate: [{notify: manager}]}",
    ]
    return "\n".join(line for line in lines if line) + "\n"


def timed(fn: object, runs: int) -> float:
    """Median seconds of `runs` calls."""
    assert callable(fn)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def shipped(runs: int) -> None:
    files = sorted(p for p in DEFINITIONS.glob("*.yaml") if not p.name.endswith(".test.yaml"))
    header(
        f"validating definitions/ ({len(files)} files, {sum(f.stat().st_size for f in files) / 1024:.0f} KiB)"
    )
    first = time.perf_counter()
    report = validate_paths([DEFINITIONS])
    cold = time.perf_counter() - first
    assert report.ok, [p.render() for p in report.errors]
    ours = timed(lambda: validate_paths([DEFINITIONS]), runs)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present, as the engine's loader
    texts = [f.read_text(encoding="utf-8") for f in files]
    theirs = timed(lambda: [yaml.load(t, Loader=loader) for t in texts], runs)  # a safe loader
    label = f"yaml.load(Loader={loader.__name__}) of the same"
    compare("validate_paths(definitions/)", ours * 1000, "ms", label, theirs * 1000)
    note(f"the first call in this process (CEL loaded, schemas read): {cold * 1000:.0f} ms")
    note(f"{len(report.definitions)} definitions, {len(report.problems)} warnings")


def sizes(counts: list[int], runs: int) -> None:
    header("generated definitions: time per state (ratio: per-state time / per-state time at 500 states)")
    base: float | None = None
    with temp_dir() as folder:
        shutil.copy(MINI / "org.yaml", folder / "org.yaml")
        for count in counts:
            path = folder / f"chain-{count}.yaml"
            path.write_text(generated(count), encoding="utf-8")
            report = validate_paths([path, folder / "org.yaml"])
            assert report.ok, [p.render() for p in report.errors][:5]
            seconds = timed(lambda p=path: validate_paths([p, folder / "org.yaml"]), runs)
            per_state = seconds / count * 1e6
            base = base or per_state
            print(
                f"   {count:>6,} states {path.stat().st_size / 1024:>7.0f} KiB {seconds * 1000:>9.0f} ms"
                f" {per_state:>8.0f} µs/state   ×{per_state / base:.2f}",
                flush=True,
            )
            path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="up to 2,000 states, one run each")
    args = parser.parse_args()
    shipped(3 if args.quick else 7)
    sizes([500, 1000, 2000] if args.quick else [500, 1000, 2000, 4000], 1 if args.quick else 3)


if __name__ == "__main__":
    main()
