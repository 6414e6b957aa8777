"""`make mutation`: mutation testing of the engine's decision, audit, calendar and compile modules.

mutmut rewrites the modules it mutates, so it never runs in the checkout itself: the working tree's
files (tracked and new, as they are on disk) are copied to a private folder, where mutmut writes its
`mutants/` copy and runs the fast, database-free tests named in pyproject.toml's `[tool.mutmut]`
against each mutant, one process at a time. The checkout is only read.

In the copy, `sopflow/engine` (and its siblings) are real folders instead of links to the top-level
ones: mutmut copies folders without following links into them, and names each mutant by the module path
the tests import (`sopflow.engine.step`).

Run: `python -m tests.helpers.mutation [--into DIR] [--commit REV] [--resume | --retest-survivors] [--show]`;
it prints the score of each module and every surviving mutant (`--show`: with its diff), and exits 1 when
a module is under the target. `--commit HEAD` mutates what is committed, leaving out work in progress;
`--retest-survivors`, after tests were added, tries only the last run's survivors again.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
LINKED = ("engine", "cli", "schemas", "definitions")
"""The top-level folders that `sopflow/` links to."""
TARGET = 95.0
MODULES = ("engine/step.py", "engine/audit.py", "engine/calendar.py", "engine/compile.py")
KILLED = {1, 3, 36, -24, 24, 152, 255, 37}
"""mutmut's exit codes for a mutant the tests caught: a failing test, a pytest error, a timeout."""
STATUS = {0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", None: "not checked"}


def _files(root: Path) -> list[str]:
    """The working tree's files that git knows or would add (no ignored build output)."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        check=True,
        capture_output=True,
    ).stdout
    return sorted({name for name in out.decode().split("\0") if name})


def _committed(root: Path, commit: str, staging: Path) -> list[str]:
    """Unpack `commit`'s tree into `staging`; its files (links included, not followed)."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit], cwd=root, check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(staging, filter="tar")
    names = []
    for folder, dirs, files in os.walk(staging):
        here = Path(folder)
        for name in files + [d for d in dirs if (here / d).is_symlink()]:
            names.append(str((here / name).relative_to(staging)))
    return sorted(names)


def copy_tree(root: Path, into: Path, names: list[str]) -> None:
    """Copy `names` from `root` to `into`: `sopflow/<folder>` a real folder, `<folder>` a link to it."""
    for name in names:
        source = root / name
        top, _, rest = name.partition("/")
        if top == "sopflow" and rest in LINKED:
            continue  # the link itself: its folder is copied in its place below
        if not source.exists():
            continue  # deleted in the working tree, not yet committed
        target = into / ("sopflow/" + name if top in LINKED and rest else name)
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.unlink(missing_ok=True)
            target.symlink_to(os.readlink(source))
        elif not target.exists() or target.read_bytes() != source.read_bytes():
            # Copied with the time of copying, not the source's: mutmut redoes a module whose file is
            # newer than its mutants, and a commit's files carry the commit's (older) time.
            shutil.copyfile(source, target)
    for folder in LINKED:
        link = into / folder
        if not link.is_symlink():
            link.symlink_to(Path("sopflow") / folder)


@dataclass
class Score:
    module: str
    counts: Counter[str]
    survivors: list[str]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def percent(self) -> float:
        return 100.0 * self.counts["killed"] / self.total if self.total else 0.0


def scores(into: Path) -> list[Score]:
    """Each module's outcome, from the `.meta` files mutmut leaves beside the mutated modules."""
    found = []
    for module in MODULES:
        meta = into / "mutants" / "sopflow" / (module + ".meta")
        counts: Counter[str] = Counter()
        survivors = []
        if meta.exists():
            results: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
            for name, code in sorted(results.items()):
                status = "killed" if code in KILLED else STATUS.get(code, "suspicious")
                counts[status] += 1
                if status != "killed":
                    survivors.append(f"{name}: {status}")
        found.append(Score(module, counts, survivors))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--into", type=Path, default=Path("/tmp/sopflow-mutation"), help="the private copy")
    parser.add_argument("--commit", help="mutate this commit (e.g. HEAD) instead of the working tree")
    parser.add_argument(
        "--resume", action="store_true", help="keep the last run's results where the code is unchanged"
    )
    parser.add_argument(
        "--retest-survivors",
        action="store_true",
        help="after adding tests (the modules unchanged): test again only the last run's survivors",
    )
    parser.add_argument("--show", action="store_true", help="print each surviving mutant's diff")
    parser.add_argument("--report-only", action="store_true", help="print the last run's scores")
    args = parser.parse_args(argv)
    into: Path = args.into.resolve()
    if into == ROOT or ROOT in into.parents:
        parser.error(f"--into {into} is inside the checkout; mutate a copy outside it")
    mutmut = Path(sys.executable).with_name("mutmut")
    if not args.report_only:
        if not (args.resume or args.retest_survivors):
            # mutmut would keep a surviving mutant's result although the tests changed since: start over.
            shutil.rmtree(into / "mutants", ignore_errors=True)
        if args.commit is None:
            copy_tree(ROOT, into, _files(ROOT))
        else:
            with tempfile.TemporaryDirectory(prefix="sopflow-mutation-") as staging:
                copy_tree(Path(staging), into, _committed(ROOT, args.commit, Path(staging)))
        names = (
            [s.split(":", 1)[0] for score in scores(into) for s in score.survivors]
            if args.retest_survivors
            else []
        )
        done = subprocess.run([str(mutmut), "run", "--max-children", "1", *names], cwd=into, check=False)
        if done.returncode != 0:
            print(f"mutmut run failed ({done.returncode}) in {into}", file=sys.stderr)
            return 2
    failed = False
    recorded = (ROOT / "docs" / "mutation.md").read_text(encoding="utf-8")
    for score in scores(into):
        if not score.total:
            print(f"{score.module}: no results in {into}: run without --report-only first")
            failed = True
            continue
        line = ", ".join(f"{n} {status}" for status, n in sorted(score.counts.items()))
        print(f"{score.module}: {score.percent:.1f} % killed of {score.total} ({line})")
        failed |= score.percent < TARGET
        for survivor in score.survivors:
            name = survivor.split(":", 1)[0]
            # docs/mutation.md says why each known survivor is harmless; a new one needs a test or a reason.
            print(f"    {survivor}" + ("" if f"`{name}`" in recorded else "  (not in docs/mutation.md)"))
            if args.show:
                subprocess.run([str(mutmut), "show", name], cwd=into, check=False)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
