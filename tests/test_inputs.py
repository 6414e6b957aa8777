"""Hostile input: every value below once ended in `internal error` (exit 3). Each must now be refused with
exit 1 or 2, one message naming the option or argument and the fix, and nothing written: the cases, their
audit trails and their timers are exactly as before. The CLI tests run in-process on SQLite and on
PostgreSQL; the same inputs go through the installed `sopflow` as a real process (test_cli_subprocess.py
style), where raw bytes that are not UTF-8 can be passed as they come from a terminal."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sopflow.engine import InvalidData, NotFound, UsageError
from tests.conftest import Clock, engine_on
from tests.test_cli import CONTENT, DEFINITIONS, SUBMIT, Sop, refused
from tests.test_cli_subprocess import SOPFLOW, _env

DEEP = "[" * 5000 + "]" * 5000
HUGE_IDS = ["²", "99999999999999999999", "9" * 5000]


def footprint(sop: Sop) -> Any:
    """Everything a refused command must leave as it was: every case, its audit trail and its deadlines."""
    cases = sop.json("list", "--all")
    return (
        cases,
        [sop.json("history", str(c["id"])) for c in cases],
        [[(d["name"], d["due_at"]) for d in sop.json("show", str(c["id"]))["deadlines"]] for c in cases],
    )


@pytest.fixture
def sop(database_url: str) -> Sop:
    """A database (SQLite, then PostgreSQL) with the org, content-review and tiered-approval deployed,
    and case 1 submitted for screening: its 4-hour deadline is running."""
    s = Sop(database_url, CliRunner())
    s.ok(
        "deploy",
        str(DEFINITIONS / "org.yaml"),
        str(DEFINITIONS / "content-review.yaml"),
        str(DEFINITIONS / "tiered-approval.yaml"),
    )
    case = s.start("content-review", "li.na", CONTENT)
    assert s.fire(case, "submit", "li.na", SUBMIT).exit_code == 0
    return s


def unchanged(sop: Sop, before: Any) -> None:
    assert footprint(sop) == before


# -- JSON ---------------------------------------------------------------------------------------------

BAD_JSON = [
    ('{"title": NaN, "origin": "original"}', "NaN is not a JSON number"),
    ('{"title": Infinity, "origin": "original"}', "Infinity is not a JSON number"),
    ('{"title": -Infinity, "origin": "original"}', "-Infinity is not a JSON number"),
    ('{"title": "a", "origin": "original", "n": 1e999}', "1e999 is beyond the largest number"),
    ('{"title": "\\ud800", "origin": "original"}', "half of a UTF-16 surrogate pair"),
    ('{"title": "\\udcc4", "origin": "original"}', "`\\udcc4`"),
    (DEEP, "nests arrays or objects more than 64 deep"),
    ('{"a": ' * 5000 + "1" + "}" * 5000, "more than 64 deep"),
    ('{"title": "a", "origin": "original", "n": ' + "9" * 5000 + "}", "give a shorter number"),
]


@pytest.mark.parametrize(("text", "words"), BAD_JSON)
def test_start_refuses_json_no_case_can_hold(sop: Sop, text: str, words: str) -> None:
    before = footprint(sop)
    refused(sop("start", "content-review", "--data", text, user="li.na"), 2, "--data is refused", words)
    unchanged(sop, before)


@pytest.mark.parametrize(("text", "words"), BAD_JSON)
def test_fire_refuses_json_no_case_can_hold_in_data_and_data_file(
    sop: Sop, tmp_path: Path, text: str, words: str
) -> None:
    before = footprint(sop)
    refused(sop("fire", "1", "claim", "--data", text, user="wang.fang"), 2, "--data is refused", words)
    payload = tmp_path / "payload.json"
    payload.write_text(text, encoding="utf-8")
    result = sop("fire", "1", "claim", "--data-file", str(payload), user="wang.fang")
    refused(result, 2, "--data-file", "payload.json", words)
    unchanged(sop, before)


def test_a_data_file_may_start_with_a_byte_order_mark_but_must_be_utf8(sop: Sop, tmp_path: Path) -> None:
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps(CONTENT).encode("utf-8"))
    assert sop.json("start", "content-review", "--data-file", str(bom), user="li.na")["case"]["id"] == 2
    before = footprint(sop)
    gbk = tmp_path / "gbk.json"
    gbk.write_bytes(json.dumps({"title": "春季活动", "origin": "original"}, ensure_ascii=False).encode("gbk"))
    refused(sop("start", "content-review", "--data-file", str(gbk), user="li.na"), 2, "not UTF-8", "UTF-8")
    broken = tmp_path / "broken.json"
    broken.write_text('{"title": ', encoding="utf-8")
    result = sop("start", "content-review", "--data-file", str(broken), user="li.na")
    refused(result, 2, "broken.json", "is not valid JSON", "fix the JSON in the file")
    assert "quote" not in result.stderr  # a file is not typed at a shell
    refused(sop("start", "content-review", "--data-file", str(tmp_path), user="li.na"), 2, "is a folder")
    unchanged(sop, before)


def test_fire_takes_its_payload_from_a_file(sop: Sop, tmp_path: Path) -> None:
    assert sop.fire(1, "claim", "wang.fang").exit_code == 0
    payload = tmp_path / "screened.json"
    payload.write_text(json.dumps({"topic_compliant": True, "typo_free": True}), encoding="utf-8")
    done = sop.ok("fire", "1", "pass_screening", "--data-file", str(payload), user="wang.fang")
    assert "is now in manual_review" in done.stdout
    refused(
        sop("fire", "1", "x", "--data", "{}", "--data-file", str(payload), user="wang.fang"),
        2,
        "give --data or --data-file, not both",
    )


# -- filters ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "words"),
    [
        ("title=NaN", ["--where", "NaN is not a JSON number", "--where 'title=\"NaN\"'"]),
        ("title=Infinity", ["Infinity is not a JSON number"]),
        ("title=1e999", ["beyond the largest number"]),
        (f"title={DEEP}", ["more than 64 deep"]),
        ("nonsense", ["`nonsense` is not FIELD=VALUE", "--where tier="]),
        ("=1", ["is not a data field name"]),
    ],
)
def test_list_where_refuses_what_cannot_be_compared(sop: Sop, where: str, words: list[str]) -> None:
    refused(sop("list", "--where", where), 2, *words)


def test_list_where_still_takes_json_and_bare_words(sop: Sop) -> None:
    assert [c["id"] for c in sop.json("list", "--where", 'title="春季活动预告"')] == [1]
    assert [c["id"] for c in sop.json("list", "--where", "origin=user_submission")] == [1]
    assert sop.json("list", "--where", 'title="NaN"') == []


def test_the_engine_refuses_a_filter_without_a_json_form(database_url: str, clock: Clock) -> None:
    for engine in engine_on(database_url, clock, DEFINITIONS):
        with pytest.raises(UsageError, match="`title`"):
            engine.cases(data={"title": float("nan")})


# -- ids ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", HUGE_IDS)
def test_case_numbers_that_are_not_numbers_or_too_large(sop: Sop, raw: str) -> None:
    before = footprint(sop)
    too = "too large" if raw.isascii() else "is not a case number"
    for args in (
        ["show", raw],
        ["history", raw],
        ["fire", raw, "claim"],
        ["reassign", raw, "wang.fang"],
        ["audit", "verify", raw],
        *([["diagram", raw]] if raw.isascii() else []),  # `²` names no definition there
    ):
        result = sop(*args, user="wang.fang")
        refused(result, 2, "CASE" if args[0] != "diagram" else "TARGET", too, "sopflow list")
        assert len(result.stderr) < 400, result.stderr  # a 5,000-digit id is quoted cut short
    refused(sop("list", "--after", raw), 2, "--after", too)
    refused(sop("undelegate", raw, user="li.na"), 2, "DELEGATION_ID")
    refused(sop("start", "content-review", "--version", raw, user="li.na"), 2, "--version")
    unchanged(sop, before)


def test_the_engine_answers_an_id_beyond_64_bits_as_not_found(database_url: str, clock: Clock) -> None:
    for engine in engine_on(database_url, clock, DEFINITIONS):
        huge = 10**20
        calls: list[Callable[[], object]] = [
            partial(engine.case, huge),
            partial(engine.history, huge),
            partial(engine.deadlines, huge),
            partial(engine.fire, huge, "submit", actor="li.na"),
            partial(engine.definition, "content-review", huge),
        ]
        for call in calls:
            with pytest.raises(NotFound):
                call()
        assert engine.cases(after_id=huge) == []
        assert engine.cases(after_id=huge, newest_first=True) == []


# -- times --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "moment", ["9999-12-31T23:59:59+00:00", "0001-01-01T00:00:00-12:00", "9999-12-31T23:59:59-14:00"]
)
def test_tick_refuses_a_time_its_timers_cannot_reach(sop: Sop, moment: str) -> None:
    before = footprint(sop)
    refused(sop("tick", "--now", moment), 2, "--now", "out of range", "1970 to 2999")
    unchanged(sop, before)
    refused(sop("delegate", "ma.chao", "--until", moment, user="li.na"), 2, "--until", "out of range")


# -- comments -----------------------------------------------------------------------------------------


def test_a_comment_larger_than_16_kib_is_refused_and_nothing_is_written(sop: Sop) -> None:
    before = footprint(sop)
    result = sop("fire", "1", "claim", "--comment", "很" * 6000, user="wang.fang")
    refused(result, 1, "the comment is 18000 bytes, more than the 16384")
    result = sop("reassign", "1", "wang.fang", "--comment", "x" * 20_000, user="chen.jing")
    refused(result, 1, "the comment is 20000 bytes")
    unchanged(sop, before)
    assert sop.ok("fire", "1", "claim", "--comment", "x" * 16384, user="wang.fang").exit_code == 0


def test_the_engine_caps_comments_and_refuses_lone_surrogates(database_url: str, clock: Clock) -> None:
    for engine in engine_on(database_url, clock, DEFINITIONS):
        case = engine.start("content-review", CONTENT, actor="li.na").case.id
        for comment in ("x" * (16 * 1024 + 1), "bad \udcc4"):
            with pytest.raises(InvalidData, match="comment"):
                engine.fire(case, "submit", actor="li.na", payload=SUBMIT, comment=comment)
        with pytest.raises(InvalidData, match="surrogate"):
            engine.start("content-review", {**CONTENT, "title": "\ud800"}, actor="li.na")
        with pytest.raises(InvalidData, match="NaN"):
            engine.start("content-review", {**CONTENT, "n": float("nan")}, actor="li.na")
        assert [r.event for r in engine.history(case)] == ["start"]


def test_an_argument_that_is_not_utf8_is_refused_as_the_terminals_encoding(sop: Sop) -> None:
    before = footprint(sop)
    gbk = "你好".encode("gbk").decode("utf-8", "surrogateescape")
    result = sop("fire", "1", "claim", "--comment", gbk, user="wang.fang")
    refused(result, 2, "the argument after `--comment`", "byte 0xc4", "encoding is not UTF-8", "LANG=C.UTF-8")
    refused(sop("show", gbk), 2, "argument 4")
    unchanged(sop, before)


# -- what a terminal is shown -------------------------------------------------------------------------


def test_control_characters_are_shown_escaped_and_json_keeps_them(sop: Sop) -> None:
    comment = "\x1b]0;pwned\x07\x1b[31mred\x1b[0m\nline two \u202eevil\x9b"
    sop.ok("fire", "1", "claim", "--comment", comment, user="wang.fang")
    out = sop.ok("history", "1").stdout
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out and "\x9b" not in out
    rows = out.splitlines()
    assert len(rows) == 2 + 3  # headers, rule, one line per record
    assert "\\x1b]0;pwned" in rows[-1]
    assert max(len(r) for r in rows) <= 200
    assert sop.json("history", "1")[-1]["comment"] == comment

    evil = {**CONTENT, "contributor": "\x1b[2J\u202e用户"}
    case = sop.start("content-review", "li.na", evil)
    shown = sop.ok("show", str(case)).stdout
    assert "\x1b" not in shown and "\u202e" not in shown
    assert "\\u202e用户" in shown
    assert sop.json("show", str(case))["case"]["data"]["contributor"] == "\x1b[2J\u202e用户"


# -- the same through a real process ------------------------------------------------------------------


def run(*args: str | bytes, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [SOPFLOW, *args], cwd=cwd, env=_env(), capture_output=True, timeout=120, check=False
    )


@pytest.fixture
def process_db(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert run("--db", url, "deploy", str(DEFINITIONS), cwd=tmp_path).returncode == 0
    start = run(
        "--db", url, "--as", "li.na", "start", "content-review", "--data", json.dumps(CONTENT), cwd=tmp_path
    )
    assert start.returncode == 0, start.stderr
    yield url


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["start", "content-review", "--data", '{"title": NaN}'], b"--data is refused: NaN"),
        (["start", "content-review", "--data", '{"n": 1e999}'], b"1e999 is beyond"),
        (["start", "content-review", "--data", '{"t": "\\ud800"}'], b"surrogate"),
        (["start", "content-review", "--data", DEEP], b"more than 64 deep"),
        (["fire", "1", "submit", "--comment", "你好".encode("gbk")], b"encoding is not UTF-8"),
        (["fire", "1", "submit", "--data", b'{"material_url": "\xff"}'], b"byte 0xff is not UTF-8"),
        (["show", "²"], b"is not a case number"),
        (["show", "99999999999999999999"], b"too large"),
        (["history", "9" * 5000], b"too large"),
        (["list", "--after", "99999999999999999999"], b"--after"),
        (["list", "--where", "title=NaN"], b"--where"),
        (["tick", "--now", "9999-12-31T23:59:59+00:00"], b"out of range"),
    ],
)
def test_hostile_input_through_a_real_process(
    process_db: str, tmp_path: Path, args: list[str | bytes], words: bytes
) -> None:
    db = Path(process_db.removeprefix("sqlite:///"))
    before = db.read_bytes()
    done = run("--db", process_db, "--as", "li.na", *args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert b"Traceback" not in done.stderr and done.stdout == b""
    assert done.stderr.startswith(b"error: ") and b"\n  hint: " in done.stderr
    assert words in done.stderr, done.stderr
    assert db.read_bytes() == before


def test_list_where_nan_on_postgresql_through_a_real_process(postgres_server: str, tmp_path: Path) -> None:
    from tests.conftest import fresh_postgres_database

    url = fresh_postgres_database(postgres_server)
    assert run("--db", url, "deploy", str(DEFINITIONS), cwd=tmp_path).returncode == 0
    done = run("--db", url, "list", "--where", "title=NaN", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert b"NaN is not a JSON number" in done.stderr and b"Traceback" not in done.stderr
    assert b'title="NaN"' in done.stderr


# -- every other option that takes a number ---------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["tick", "--lease", "99999999999999999999"], ["--lease", "out of range (1 to 86400)"]),
        (["tick", "--lease", "-5"], ["--lease", "out of range"]),
        (["worker", "--idle", "nan"], ["--idle", "out of range"]),
        (["worker", "--idle", "inf"], ["--idle", "out of range"]),
        (["worker", "--idle", "soon"], ["--idle", "is not a number of seconds"]),
        (["worker", "--max-backoff", "nan"], ["--max-backoff", "out of range"]),
        (["defs", "show", "content-review", "--version", "99999999999999999999"], ["--version", "too large"]),
        (["tasks", "--limit", "99999999999999999999"], ["--limit"]),
    ],
)
def test_numbers_out_of_range_in_any_option(sop: Sop, args: list[str], words: list[str]) -> None:
    before = footprint(sop)
    refused(sop(*args, user="li.na"), 2, *words)
    unchanged(sop, before)


def test_a_variable_that_is_not_utf8_is_refused_like_an_argument(sop: Sop) -> None:
    user = "li\udcff"  # SOPFLOW_USER=$'li\xff' in a Latin-1 shell
    result = sop("show", "1", env={"SOPFLOW_USER": user})
    refused(result, 2, "the variable SOPFLOW_USER", "byte 0xff is not UTF-8")


def test_simulate_refuses_the_same_json_in_a_steps_payload(sop: Sop) -> None:
    for text, words in BAD_JSON:
        result = sop(
            "simulate", "content-review", f"submit={text}", "--data", json.dumps(CONTENT), user="li.na"
        )
        refused(result, 2, "the payload of `submit` is refused", words)


def test_an_anchor_file_nested_5000_deep_is_not_an_anchor(sop: Sop, tmp_path: Path) -> None:
    key = tmp_path / "anchor.key"
    key.write_bytes(bytes(range(40)))
    deep = tmp_path / "deep.json"
    deep.write_text(DEEP, encoding="utf-8")
    result = sop("audit", "verify", "--all", "--anchor", str(deep), "--key-file", str(key))
    refused(result, 2, "deep.json", "is not a sopflow anchor")


def test_a_huge_name_typed_by_mistake_is_quoted_cut_short(sop: Sop) -> None:
    before = footprint(sop)
    huge = "x" * 100_000
    refused(sop("fire", "1", "claim", user=huge), 1, "(100000 characters) is not in the org")
    refused(sop("fire", "1", huge, user="wang.fang"), 1, "(100000 characters) is not an event")
    for result in (sop("fire", "1", "claim", user=huge), sop("start", huge, user="li.na")):
        assert len(result.stderr) < 1000, result.stderr[:200]
    unchanged(sop, before)


@pytest.mark.parametrize("step", ["+99999999d", "+9999999999999999999999h", "+" + "9" * 5000 + "h"])
def test_a_simulated_clock_step_beyond_ten_years_is_refused(step: str) -> None:
    sop = Sop("sqlite:///unused.db", CliRunner())
    data = json.dumps(CONTENT)
    result = sop(
        "simulate", "content-review", f"submit={json.dumps(SUBMIT)}", step, "--data", data, user="li.na"
    )
    refused(result, 2, "clock")


def test_a_byte_order_mark_in_data_typed_on_the_command_line_is_ignored(sop: Sop) -> None:
    answer = sop.json("start", "content-review", "--data", "\ufeff" + json.dumps(CONTENT), user="li.na")
    assert answer["case"]["data"] == CONTENT
