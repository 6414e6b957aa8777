"""Exports, on SQLite and PostgreSQL: pm4py reads the XES export of generated cases and of the demo, and
the directly-follows graph it discovers uses only steps the definitions allow; a desensitised export holds
no raw address, age, ID, name or phone, and the same person has the same token in two exports; CSV opens
in a spreadsheet (a BOM, formulas defused), JSON Lines is one case per line; memory stays flat."""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sopflow.cli.main import cli
from sopflow.engine.definition.model import APPROVE, REJECT, Definition
from sopflow.engine.privacy import token
from sopflow.engine.runtime import Engine
from tests.conftest import DEFINITIONS, MINI, ROOT, Clock, engine_on

PRIVACY = ROOT / "tests" / "fixtures" / "privacy"
KEY = b"0123456789abcdef0123456789abcdef"
PERSON = {
    "title": "社区服务日",
    "applicant_name": "张三丰",
    "phone": "13800138000",
    "id_number": "110105194912310021",
    "address": "广东省深圳市南山区科技园路1号",
    "age": 33,
    "story": "我住在深圳南山，电话13800138000",
}


@pytest.fixture
def engine(database_url: str, clock: Clock) -> Iterator[Engine]:
    yield from engine_on(database_url, clock, MINI)


def generate(engine: Engine, n: int) -> None:
    """`n` expense claims along every path: paid by a manager, sent back and cancelled, paid jointly,
    cancelled at once."""
    for i in range(n):
        amount = 2000 if i % 4 == 2 else 100
        case = engine.start("expense", {"amount": amount, "purpose": f"claim {i}"}, actor="alice").case
        if i % 4 == 3:
            engine.fire(case.id, "cancel", actor="alice")
            continue
        after = engine.fire(case.id, "submit", actor="alice").case
        if i % 4 == 0:
            assert after.assignee is not None
            engine.fire(case.id, "approve_claim", actor=after.assignee, payload={"note": "ok"})
        elif i % 4 == 1:
            engine.fire(case.id, "send_back", actor="mia")
            engine.fire(case.id, "cancel", actor="alice")
        else:
            engine.fire(case.id, APPROVE, actor="mia")
            engine.fire(case.id, APPROVE, actor="fay")


def _resolve(defn: Definition, state: str) -> set[str]:
    """The states a case rests in after entering `state` (a choice routes on at once)."""
    s = defn.states[state]
    if s.is_choice:
        return set().union(*(_resolve(defn, b.target) for b in s.choice))
    return {state}


def allowed_follows(defn: Definition) -> set[tuple[str, str]]:
    """(a, b): step b may directly follow step a, by the definition alone."""
    lands: dict[str, set[str]] = {"start": _resolve(defn, defn.initial)}
    for s in defn.all_states():
        for t in s.transitions:
            lands.setdefault(t.event, set()).update(_resolve(defn, t.target))
        if s.approval is not None:
            for vote, outcome in ((APPROVE, s.approval.approved), (REJECT, s.approval.rejected)):
                # A vote that does not yet decide leaves the case where it is.
                lands.setdefault(vote, set()).update({s.name} | _resolve(defn, outcome))
    follows = {(a, b) for a, states in lands.items() for st in states for b in defn.states[st].events}
    # Steps on the case that leave it in its state (a task claimed or handed on, a deadline's notices)
    # may come between any two steps.
    steps = {a for a, _b in follows} | {b for _a, b in follows}
    return (
        follows
        | {(a, stay) for a in steps | STAYS for stay in STAYS}
        | {(stay, b) for stay in STAYS for b in steps}
    )


STAYS = frozenset({"claim", "reassign", "escalate", "deadline_breached"})


def _xes(engine: Engine, path: Path, **filters: Any) -> None:
    with path.open("wb") as out:
        engine.export(out, "xes", **filters)


PM4PY_NOISE = pytest.mark.filterwarnings(
    "ignore::UserWarning:pm4py", "ignore::DeprecationWarning", "ignore::FutureWarning"
)
"""pm4py's own advice (a faster optional reader) and its libraries' deprecations are not sopflow's."""


@PM4PY_NOISE
def test_pm4py_reads_the_xes_of_1000_cases_and_discovers_only_allowed_steps(
    engine: Engine, tmp_path: Path
) -> None:
    pm4py = pytest.importorskip("pm4py")
    n = 1000 if engine.store.dialect == "sqlite" else 200
    generate(engine, n)
    path = tmp_path / "expense.xes"
    _xes(engine, path, definition="expense")
    log = pm4py.read_xes(str(path))
    assert log["case:concept:name"].nunique() == n
    assert set(log["lifecycle:transition"]) == {"complete"}
    assert {"time:timestamp", "org:resource", "concept:name"} <= set(log.columns)
    dfg, starts, _ends = pm4py.discover_dfg(log)
    allowed = allowed_follows(engine.definition("expense"))
    assert set(starts) == {"start"}
    assert dfg and set(dfg) <= allowed, set(dfg) - allowed
    # Every path taken shows in the graph.
    assert {
        ("start", "submit"),
        ("submit", "approve_claim"),
        ("send_back", "cancel"),
        (APPROVE, APPROVE),
    } <= set(dfg)


@PM4PY_NOISE
def test_pm4py_reads_the_demo(tmp_path: Path) -> None:
    pm4py = pytest.importorskip("pm4py")
    db = f"sqlite:///{tmp_path / 'demo.db'}"
    assert CliRunner().invoke(cli, ["--db", db, "demo"]).exit_code == 0
    with Engine(db) as sop:
        _xes(sop, tmp_path / "demo.xes")
        log = pm4py.read_xes(str(tmp_path / "demo.xes"))
        dfg, _starts, _ends = pm4py.discover_dfg(log)
        for definition in log["case:sopflow:definition"].unique():
            allowed = allowed_follows(sop.definition(definition))
            traces = log[log["case:sopflow:definition"] == definition]
            rows = list(zip(traces["case:concept:name"], traces["concept:name"], strict=True))
            pairs = {(a, b) for (ca, a), (cb, b) in itertools.pairwise(rows) if ca == cb}
            assert pairs and pairs <= allowed, (definition, pairs - allowed)
    assert dfg


CONTROL = frozenset({"deadline_breached", "escalate", "reassign", "suspend_case", "resume_case"})


@PM4PY_NOISE
def test_xes_leaves_timers_escalations_reassignments_and_control_records_out(
    engine: Engine, clock: Clock, tmp_path: Path
) -> None:
    """A breached deadline, its escalations (a notice, a reassignment, a fired step) and a suspension are
    records about a case, not its steps: pm4py's directly-follows graph of the XES holds only the
    definition's steps, while JSON Lines still carries every record."""
    from sopflow.engine.worker import ConsoleChannel, Worker

    pm4py = pytest.importorskip("pm4py")
    generate(engine, 8)
    late = [
        engine.start("expense", {"amount": 100, "purpose": f"late {i}"}, actor="alice").case.id
        for i in range(4)
    ]
    for case in late:
        engine.fire(case, "submit", actor="alice")
    engine.suspend(late[0], actor="root", reason="receipts missing")
    engine.resume(late[0], actor="root")
    worker = Worker(engine, channels=[ConsoleChannel(write=lambda _line: None)])
    for hours in (49, 1, 3):
        clock.advance(hours=hours)
        worker.tick()
    recorded = {r.event for case in late for r in engine.history(case)}
    assert recorded >= CONTROL, recorded
    path = tmp_path / "late.xes"
    _xes(engine, path, definition="expense")
    log = pm4py.read_xes(str(path))
    assert not set(log["concept:name"]) & CONTROL
    dfg, _starts, _ends = pm4py.discover_dfg(log)
    allowed = {(a, b) for a, b in allowed_follows(engine.definition("expense")) if not {a, b} & CONTROL}
    assert set(dfg) <= allowed, set(dfg) - allowed
    assert ("submit", "send_back") in dfg  # the step the last escalation fired is a step
    lines = io.BytesIO()
    engine.export(lines, "jsonl", definition="expense")
    kept = {e["event"] for line in lines.getvalue().splitlines() for e in json.loads(line)["events"]}
    assert kept >= CONTROL


def test_the_xes_has_the_standard_structure(engine: Engine, tmp_path: Path) -> None:
    """Without pm4py: the elements and attributes IEEE 1849 asks for, read with the standard library."""
    import xml.etree.ElementTree as ET

    generate(engine, 8)
    path = tmp_path / "e.xes"
    _xes(engine, path)
    ns = {"x": "http://www.xes-standard.org/"}
    root = ET.parse(path).getroot()
    assert root.tag == "{http://www.xes-standard.org/}log" and root.get("xes.version") == "1849-2016"
    prefixes = {e.get("prefix") for e in root.findall("x:extension", ns)}
    assert prefixes == {"concept", "time", "org", "lifecycle"}
    traces = root.findall("x:trace", ns)
    assert len(traces) == 8
    for trace in traces:
        events = trace.findall("x:event", ns)
        assert events
        for event in events:
            keys = {a.get("key") for a in event}
            assert {"concept:name", "time:timestamp", "org:resource", "lifecycle:transition"} <= keys
            stamp = next(a.get("value") for a in event if a.get("key") == "time:timestamp")
            assert stamp is not None and stamp.endswith("+00:00")


# -- desensitised ------------------------------------------------------------------------------------


@pytest.fixture
def people(database_url: str, clock: Clock) -> Iterator[Engine]:
    yield from engine_on(database_url, clock, PRIVACY)


def _two_cases_of_one_person(engine: Engine) -> None:
    for _ in range(2):
        case_id = engine.start("volunteer", dict(PERSON), actor="alice").case.id
        engine.fire(case_id, "submit", actor="alice", payload={"emergency_phone": "+86 139 0013 9000"},
                    comment="张三丰说他周末有空")  # fmt: skip
        engine.fire(case_id, "accept", actor="mia")


RAW = (
    "张三丰",
    "13800138000",
    "110105194912310021",
    "深圳",
    "南山",
    "13900139000",
    "139 0013 9000",
    "周末",
    "alice",
    "mia",
)


def _export(engine: Engine, fmt: str, key: bytes | None = KEY) -> str:
    out = io.BytesIO()
    engine.export(out, fmt, desensitise_key=key)
    return out.getvalue().decode("utf-8")


def test_a_desensitised_export_holds_no_raw_personal_data(people: Engine) -> None:
    _two_cases_of_one_person(people)
    plain = _export(people, "jsonl", key=None)
    assert all(raw in plain for raw in ("张三丰", "13800138000", "深圳")), "the plain export has them"
    for fmt in ("csv", "jsonl", "xes"):
        text = _export(people, fmt)
        leaked = [raw for raw in RAW if raw in text]
        assert not leaked, (fmt, leaked)
        assert '"age": 33' not in text and '"age":33' not in text
    case = json.loads(_export(people, "jsonl").splitlines()[0])
    assert case["data"]["address"] == "广东省"
    assert case["data"]["age"] == "25-34"
    assert "story" not in case["data"]
    assert case["data"]["phone"] == token(KEY, "phone", "13800138000")
    assert case["data"]["emergency_phone"] == token(KEY, "phone", "13900139000")
    submit = case["events"][1]
    assert submit["payload"] == {"emergency_phone": token(KEY, "phone", "13900139000")}
    assert submit["data_change"]["emergency_phone"] == [None, token(KEY, "phone", "13900139000")]
    assert submit["comment"] is None and submit["actor"] == token(KEY, "person", "alice")


def test_the_same_person_has_the_same_token_in_two_exports(people: Engine) -> None:
    _two_cases_of_one_person(people)
    first = [json.loads(line) for line in _export(people, "jsonl").splitlines()]
    rows = list(csv.DictReader(io.StringIO(_export(people, "csv").removeprefix("\ufeff"))))
    second = {int(r["case"]): json.loads(r["case_data"]) for r in rows}
    for case in first:
        assert case["data"]["applicant_name"] == second[case["case"]]["applicant_name"]
        assert case["data"]["id_number"] == second[case["case"]]["id_number"]
    assert first[0]["data"]["applicant_name"] == first[1]["data"]["applicant_name"], "one person, one token"
    assert rows[0]["actor"] == token(KEY, "person", "alice")
    other = json.loads(_export(people, "jsonl", key=b"another key of thirty-two bytes!").splitlines()[0])
    assert other["data"]["applicant_name"] != first[0]["data"]["applicant_name"], "another key, other tokens"


# -- the formats and the command ----------------------------------------------------------------------


def test_csv_opens_in_a_spreadsheet_and_jsonl_is_one_case_a_line(engine: Engine) -> None:
    case_id = engine.start("expense", {"amount": 5, "purpose": '=HYPERLINK("x")'}, actor="alice").case.id
    engine.fire(case_id, "submit", actor="alice", comment="报销 出租车")
    text = _export(engine, "csv", key=None)
    assert text.startswith("\ufeffcase,definition,")
    rows = list(csv.DictReader(io.StringIO(text.removeprefix("\ufeff"))))
    assert len(rows) == 2 and rows[1]["comment"] == "报销 出租车"
    assert json.loads(rows[0]["case_data"])["purpose"] == '=HYPERLINK("x")', "JSON cells keep the value"
    generate(engine, 5)
    lines = _export(engine, "jsonl", key=None).splitlines()
    assert len(lines) == 6 and all(json.loads(line)["events"] for line in lines)


def test_formula_cells_are_defused() -> None:
    from sopflow.engine.export.csv import _cell

    assert _cell("=1+1") == "'=1+1" and _cell("@SUM") == "'@SUM" and _cell("plain") == "plain"


def test_the_cli_exports_filters_and_desensitises(engine: Engine, tmp_path: Path) -> None:
    generate(engine, 4)
    runner = CliRunner()
    key = tmp_path / "privacy.key"
    key.write_bytes(os.urandom(32))
    base = ["--db", engine.database_url, "export"]
    out = tmp_path / "e.csv"
    done = runner.invoke(cli, [*base, "--format", "csv", "--out", str(out), "--definition", "expense"])
    assert done.exit_code == 0, done.output
    assert "exported 4 cases" in done.output
    assert out.read_bytes().startswith(b"\xef\xbb\xbf")
    none = runner.invoke(cli, [*base, "--format", "jsonl", "--since", "2999-01-01T00:00:00Z"])
    assert none.exit_code == 0 and none.stdout == ""
    refused = runner.invoke(
        cli, [*base, "--format", "csv", "--desensitise"], env={"SOPFLOW_PRIVACY_KEY_FILE": ""}
    )
    assert refused.exit_code == 2 and "no privacy key" in refused.output
    unknown = runner.invoke(
        cli, [*base, "--format", "xes", "--definition", "nope", "--out", str(tmp_path / "n.xes")]
    )
    assert unknown.exit_code == 1 and "no definition `nope`" in unknown.output
    assert not (tmp_path / "n.xes").exists(), "nothing half-written"
    safe = runner.invoke(
        cli,
        [
            *base,
            "--json",
            "--format",
            "xes",
            "--desensitise",
            "--key-file",
            str(key),
            "--out",
            str(tmp_path / "d.xes"),
        ],
    )
    assert safe.exit_code == 0, safe.output
    assert json.loads(safe.output)["desensitised"] is True
    assert "alice" not in (tmp_path / "d.xes").read_text(encoding="utf-8")


def test_memory_stays_flat_in_the_number_of_cases(sqlite_url: str, clock: Clock) -> None:
    """Measured on SQLite: the streaming is the same code on both databases."""
    engine = next(engine_on(sqlite_url, clock, MINI))

    class Sink(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, b: Any) -> int:
            return len(b)

    def peak() -> int:
        tracemalloc.start()
        engine.export(Sink(), "jsonl")  # type: ignore[arg-type]
        _now, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    try:
        generate(engine, 600)
        small = peak()
        generate(engine, 1800)
        large = peak()
    finally:
        engine.close()
    assert large < small * 1.5, (small, large)


def test_the_seed_definitions_export(tmp_path: Path, clock: Clock) -> None:
    for _sop in engine_on(f"sqlite:///{tmp_path / 's.db'}", clock, DEFINITIONS):
        assert _export(_sop, "xes", key=None).endswith("</log>\n")


def test_export_out_writes_through_a_symlink_and_never_replaces_a_fifo(
    engine: Engine, tmp_path: Path
) -> None:
    generate(engine, 2)
    base = ["--db", engine.database_url, "export", "--format", "csv", "--out"]
    target = tmp_path / "target.csv"
    target.write_text("old", encoding="utf-8")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    done = CliRunner().invoke(cli, [*base, str(link)])
    assert done.exit_code == 0, done.output
    assert link.is_symlink(), "the link stays a link"
    assert target.read_bytes().startswith(b"\xef\xbb\xbf"), "the export went to the link's target"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    refused = CliRunner().invoke(cli, [*base, str(fifo)])
    assert refused.exit_code == 2 and "is not a regular file" in refused.output
    assert fifo.exists() and not fifo.is_file(), "the FIFO is still a FIFO"
    assert not list(tmp_path.glob(".fifo*")), "nothing half-written beside it"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "sopflow"), *base, str(fifo)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "is not a regular file" in done.stderr and "Traceback" not in done.stderr
