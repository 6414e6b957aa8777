"""Handlers of automatic steps for `sopflow worker` and `sopflow tick`, outside an embedding application:
`--handlers MODULE:FUNCTION` (a function returning {name: handler}) and the `sopflow.handlers` entry-point
group of installed packages; a handler that cannot be loaded stops the command before it takes any work.
Run in-process (CliRunner, on both databases) and as a real `sopflow worker` process."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from sopflow.cli.main import cli
from sopflow.engine import Engine
from sopflow.engine.automatic import HANDLER_GROUP, load_handlers
from sopflow.engine.errors import ConfigurationError, UsageError
from tests.test_automatic import AUTOMATIC, _submitted
from tests.test_cli_subprocess import SOPFLOW, _env

REGISTRY = '''
def score(call):
    return {"value": len(call.data["name"]) * 10}


def handlers():
    return {"score": score}


def not_a_mapping():
    return [score]


def broken():
    raise RuntimeError("no scoring licence")


def nan():
    return {"score": lambda call: {"value": float("nan")}}
'''


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on the import path holding the module `scoring_handlers` and, installed beside it, the
    distribution `scoring-plugin` whose entry point `score` (group sopflow.handlers) is its function."""
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "scoring_handlers.py").write_text(REGISTRY, encoding="utf-8")
    info = folder / "scoring_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: scoring-plugin\nVersion: 1.0\n", "utf-8")
    (info / "entry_points.txt").write_text(f"[{HANDLER_GROUP}]\nscore = scoring_handlers:score\n", "utf-8")
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    sys.modules.pop("scoring_handlers", None)


def test_a_registry_function_gives_the_handlers(package: Path) -> None:
    handlers = load_handlers(["scoring_handlers:handlers"], installed=False)
    assert list(handlers) == ["score"]
    assert handlers["score"].__module__ == "scoring_handlers"


def test_an_installed_entry_point_is_a_handler(package: Path) -> None:
    handlers = load_handlers()
    assert handlers["score"].__name__ == "score"
    assert "score" not in load_handlers(installed=False)


@pytest.mark.parametrize(
    ("spec", "error", "words"),
    [
        ("scoring_handlers", UsageError, "MODULE:FUNCTION"),
        ("scoring_handlers:missing", UsageError, "has no function `missing`"),
        ("scoring_handlers:not_a_mapping", UsageError, "not a mapping"),
        ("scoring_handlers:broken", ConfigurationError, "no scoring licence"),
        ("no_such_module_here:handlers", ConfigurationError, "No module named"),
        ("sys:exit", ConfigurationError, r"could not be called: it called exit\(None\)"),
    ],
)
def test_a_registry_that_cannot_give_handlers_is_refused_with_what_to_fix(
    package: Path, spec: str, error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        load_handlers([spec], installed=False)


def test_the_hint_says_what_to_fix_a_registry_that_raises_or_a_module_that_is_missing(package: Path) -> None:
    with pytest.raises(ConfigurationError) as called:
        load_handlers(["json:dumps"], installed=False)  # a function that needs an argument
    assert "called without arguments" in (called.value.hint or "")
    with pytest.raises(ConfigurationError) as missing:
        load_handlers(["no_such_module_here:handlers"], installed=False)
    assert "install the package" in (missing.value.hint or "")


def test_a_registry_that_exits_stops_tick_and_the_worker_with_exit_2(tmp_path: Path) -> None:
    for command in ("tick", "worker"):
        done = subprocess.run(
            [SOPFLOW, "--db", f"sqlite:///{tmp_path / 'x.db'}", command, "--handlers", "sys:exit"],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, (command, done.stderr)
        assert done.stderr.startswith("error: --handlers sys:exit could not be called: it called exit(None)")


def test_two_registries_naming_one_handler_are_refused(package: Path) -> None:
    with pytest.raises(UsageError, match="both"):
        load_handlers(["scoring_handlers:handlers", "scoring_handlers:handlers"], installed=False)


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_tick_with_handlers_does_the_automatic_work(package: Path, database_url: str) -> None:
    with Engine(database_url) as sop:
        sop.deploy([AUTOMATIC])
        case = _submitted(sop)
    code, output = _run("--db", database_url, "tick", "--handlers", "scoring_handlers:handlers")
    assert code == 0, output
    with Engine(database_url) as sop:
        after = sop.case(case)
        assert (after.state, after.data["score"]) == ("review", 20)


def test_tick_refuses_a_handler_it_cannot_load_and_does_nothing(package: Path, database_url: str) -> None:
    with Engine(database_url) as sop:
        sop.deploy([AUTOMATIC])
        case = _submitted(sop)
    code, output = _run("--db", database_url, "tick", "--handlers", "scoring_handlers:broken")
    assert code == 2
    assert "no scoring licence" in output and "Traceback" not in output
    with Engine(database_url) as sop:
        assert sop.case(case).state == "scoring"
        assert len(sop.history(case)) == 2


def test_tick_takes_a_nan_answer_as_a_failed_try_and_goes_on(package: Path, database_url: str) -> None:
    with Engine(database_url) as sop:
        sop.deploy([AUTOMATIC])
        case = _submitted(sop)
    code, output = _run("--db", database_url, "tick", "--handlers", "scoring_handlers:nan")
    assert code == 0, output
    with Engine(database_url) as sop:
        after = sop.case(case)
        assert after.state == "score_by_hand"
        assert "not a number JSON can hold" in after.data["scoring_error"]


def test_a_tick_process_takes_a_nan_answer_as_a_failed_try(package: Path, tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'n.db'}"
    with Engine(database) as sop:
        sop.deploy([AUTOMATIC])
        case = _submitted(sop)
    done = subprocess.run(
        [SOPFLOW, "--db", database, "tick", "--handlers", "scoring_handlers:nan"],
        env={**_env(), "PYTHONPATH": str(package)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    with Engine(database) as sop:
        assert sop.case(case).state == "score_by_hand"


def _worker_run(database: str, folder: Path, *args: str) -> str:
    """Run `sopflow worker` with `folder` on PYTHONPATH until its case leaves `scoring`, then SIGTERM."""
    with Engine(database) as sop:
        sop.deploy([AUTOMATIC])
        case = _submitted(sop)
    log = folder.parent / "worker.err"
    env = {**_env(), "PYTHONPATH": str(folder)}
    with log.open("w", encoding="utf-8") as err:
        proc = subprocess.Popen(
            [SOPFLOW, "--db", database, "worker", "--idle", "0.2", *args],
            cwd=folder.parent,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, log.read_text(encoding="utf-8")
                assert time.monotonic() < deadline, log.read_text(encoding="utf-8")
                with Engine(database) as sop:
                    if sop.case(case).state != "scoring":
                        assert sop.case(case).data["score"] == 20
                        break
                time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return log.read_text(encoding="utf-8")


def test_a_worker_process_calls_the_handlers_of_a_registry(package: Path, tmp_path: Path) -> None:
    (package / "scoring_plugin-1.0.dist-info" / "entry_points.txt").unlink()  # only --handlers
    text = _worker_run(f"sqlite:///{tmp_path / 'w.db'}", package, "--handlers", "scoring_handlers:handlers")
    assert "handlers: score" in text and "Traceback" not in text


def test_a_worker_process_calls_an_installed_entry_point(package: Path, tmp_path: Path) -> None:
    text = _worker_run(f"sqlite:///{tmp_path / 'w.db'}", package)
    assert "handlers: score" in text and "Traceback" not in text


def test_a_worker_process_with_a_bad_registry_exits_2_before_any_work(package: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [SOPFLOW, "--db", f"sqlite:///{tmp_path / 'w.db'}", "worker", "--handlers", "scoring_handlers:nope"],
        env={**_env(), "PYTHONPATH": str(package)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "module `scoring_handlers` has no function `nope`" in done.stderr
    assert "Traceback" not in done.stderr
