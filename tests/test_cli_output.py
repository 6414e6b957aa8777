"""What the command line says when its answer cannot be written (a full disk behind `> file`), and that an
argument's line breaks and control characters never split or colour an error message."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from tests.test_cli import CONTENT, DEFINITIONS, SUBMIT, Sop, refused
from tests.test_cli_subprocess import SOPFLOW, _env

FULL = Path("/dev/full")
needs_full = pytest.mark.skipif(not FULL.is_char_device(), reason="no /dev/full on this machine")
HOSTILE = "evil\x1b]0;pwned\x07\nfake row"


def run(url: str, *args: str, stdout: Any = subprocess.PIPE) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [SOPFLOW, "--db", url, *args],
        env=_env(),
        stdout=stdout,
        stderr=subprocess.PIPE,
        timeout=120,
        check=False,
    )


@pytest.fixture
def started(database_url: str) -> str:
    assert run(database_url, "deploy", str(DEFINITIONS)).returncode == 0
    done = run(database_url, "--as", "li.na", "start", "content-review", "--data", json.dumps(CONTENT))
    assert done.returncode == 0, done.stderr
    return database_url


@pytest.fixture
def sop(tmp_path: Path) -> Sop:
    return Sop(f"sqlite:///{tmp_path / 'x.db'}", CliRunner())


@needs_full
@pytest.mark.parametrize(
    "args",
    [
        ["report"],
        ["export", "--format", "csv"],
        ["list"],
        ["audit", "access"],
        ["--as", "li.na", "fire", "1", "submit", "--data", json.dumps(SUBMIT)],
    ],
)
def test_a_full_disk_behind_standard_output_is_exit_2_with_one_message(started: str, args: list[str]) -> None:
    with FULL.open("wb") as full:
        done = run(started, *args, stdout=full)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.decode().splitlines()
    assert lines[0] == "error: cannot write the output: no space left on device", lines
    assert lines[1].startswith("  hint: free space on the disk") and len(lines) == 2, lines
    # What the command stored is whole: the trail replays.
    assert run(started, "audit", "verify", "--all").returncode == 0


def test_a_full_disk_through_clirunner(sop: Sop, monkeypatch: pytest.MonkeyPatch) -> None:
    sop.ok("deploy", str(DEFINITIONS))
    sop.start("content-review", "li.na", CONTENT)
    echo = click.echo

    def full(
        message: Any = None, file: Any = None, nl: bool = True, err: bool = False, color: Any = None
    ) -> None:
        if not err:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        echo(message, file=file, nl=nl, err=err, color=color)

    monkeypatch.setattr(click, "echo", full)
    refused(sop("list"), 2, "cannot write the output: no space left on device", "free space on the disk")


def test_an_argument_with_a_line_break_stays_on_its_line(sop: Sop) -> None:
    sop.ok("deploy", str(DEFINITIONS))
    result = sop("export", "--format", "csv", "--definition", HOSTILE, user="chen.jing")
    refused(result, 1, "no definition `evil\\x1b]0;pwned\\x07\\nfake row` is deployed")
    assert result.stderr.count("\n") == 2 and "\x1b" not in result.stderr, result.stderr
    event = sop("fire", "1", "a\nhint: do this", user="li.na")
    assert event.exit_code == 1
    assert [line for line in event.stderr.splitlines() if "hint:" in line] == [event.stderr.splitlines()[1]]


def test_an_argument_with_a_line_break_through_a_real_process(started: str) -> None:
    done = run(started, "--as", "li.na", "fire", "1", f"x{HOSTILE}")
    assert done.returncode == 1, done.stderr
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: `xevil\\x1b]0;pwned\\x07\\nfake row`"), lines
    assert b"\x1b" not in done.stderr


def test_a_reader_that_stops_early_ends_the_command_quietly_with_exit_1(started: str) -> None:
    proc = subprocess.Popen(
        [SOPFLOW, "--db", started, "list"], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # as `sopflow list | head -0`: the first write gets EPIPE
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 1 and err == b"", err
