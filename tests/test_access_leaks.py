"""What a person outside a case's raw view must not learn, on SQLite and PostgreSQL: a filter on an
`x-sensitive` field or a person is refused to a viewer who sees it only desensitised (recorded); a
desensitised read names people as tokens everywhere (the work item, option reasons, branches, votes);
`audit verify CASE` for a person treats a case outside their view as missing; an idempotency key another
person used tells them only that it is in use unless they may view that case; an export whose reader stops
early is still in the access log."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from sopflow.cli.main import cli
from sopflow.engine import access
from sopflow.engine.anchor import series_findings
from sopflow.engine.definition.validate import validate_paths
from sopflow.engine.errors import Conflict, ExportStopped, NotFound
from sopflow.engine.privacy import looks_personal, token
from sopflow.engine.runtime import Engine
from tests.conftest import DEFINITIONS, ROOT, Clock, engine_on

KEY = b"0123456789abcdef0123456789abcdef"
ANCHOR_KEY = b"fedcba9876543210fedcba9876543210"
SUBMISSION = {"title": "春季活动", "origin": "user_submission", "contributor": "用户小王"}
INCIDENT = {"incident_type": "complaint_surge", "summary": "x"}


@pytest.fixture
def seed(
    database_url: str, clock: Clock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Engine]:
    key = tmp_path / "privacy.key"
    key.write_bytes(KEY)
    monkeypatch.setenv("SOPFLOW_PRIVACY_KEY_FILE", str(key))
    yield from engine_on(database_url, clock, DEFINITIONS)


def _claimed(sop: Engine) -> int:
    """A user submission li.na started and submitted, claimed by wang.fang."""
    case_id = sop.start("content-review", dict(SUBMISSION), actor="li.na").case.id
    sop.fire(case_id, "submit", actor="li.na", payload={"material_url": "https://x/1"})
    sop.fire(case_id, "claim", actor="wang.fang")
    return case_id


def _refusals(sop: Engine) -> list[tuple[str, str, str]]:
    return [(e.actor, e.action, e.target) for e in sop.access_log() if e.outcome == "refused"]


# -- 1: a filter on what the viewer sees only desensitised ---------------------------------------------


@pytest.fixture
def office(
    database_url: str, clock: Clock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Engine]:
    key = tmp_path / "privacy.key"
    key.write_bytes(KEY)
    monkeypatch.setenv("SOPFLOW_PRIVACY_KEY_FILE", str(key))
    yield from engine_on(database_url, clock, ROOT / "tests" / "fixtures" / "access")


VOLUNTEER = {
    "title": "t",
    "applicant_name": "张三丰",
    "phone": "13800138000",
    "id_number": "110105194912310021",
    "address": "广东省深圳市",
    "age": 33,
}


def test_a_filter_on_a_sensitive_field_or_a_person_is_refused_to_a_desensitised_viewer(
    office: Engine, database_url: str
) -> None:
    case_id = office.start("volunteer", dict(VOLUNTEER), actor="alice").case.id
    assert [c.id for c in office.cases(viewer="ana")] == [case_id]  # seen, desensitised
    with pytest.raises(access.AccessDenied, match="may not filter cases by `phone`"):
        office.cases(data={"phone": "13800138000"}, viewer="ana")
    with pytest.raises(access.AccessDenied, match="may not filter cases by `assignee`"):
        office.cases(assignee="alice", viewer="ana")
    assert _refusals(office) == [
        ("ana", "view", "a filter on phone"),
        ("ana", "view", "a filter on assignee"),
    ]
    # A field nobody marks filters as before; so do the raw viewers' filters.
    assert [c.id for c in office.cases(data={"note": "x"}, viewer="ana")] == []
    assert [c.id for c in office.cases(data={"phone": "13800138000"}, viewer="mia")] == [case_id]
    assert [c.id for c in office.cases(data={"phone": "13800138000"})] == [case_id]
    runner = CliRunner()
    guessed = _cli(runner, database_url, "--as", "ana", "list", "--where", "phone=13800138000")
    wrong = _cli(runner, database_url, "--as", "ana", "list", "--where", "phone=13900139000")
    assert guessed.exit_code == wrong.exit_code == 1
    assert guessed.output == wrong.output and "may not filter cases by `phone`" in guessed.output


def test_a_filter_searches_only_the_cases_a_viewer_sees_raw(seed: Engine) -> None:
    """gao.yan sees every case desensitised (data analyst) and her own raw (operations staff): a filter on
    a sensitive field or another person finds only among her own, so it confirms no guess."""
    case_id = _claimed(seed)
    assert [c.id for c in seed.cases(viewer="gao.yan")] == [case_id]
    for right, wrong in ((dict(contributor="用户小王"), dict(contributor="用户小李")),):
        assert seed.cases(data=right, viewer="gao.yan") == seed.cases(data=wrong, viewer="gao.yan") == []
    assert seed.cases(assignee="wang.fang", viewer="gao.yan") == []
    assert [c.id for c in seed.cases(data={"contributor": "用户小王"}, viewer="wang.fang")] == [case_id]
    assert [c.id for c in seed.cases(assignee="wang.fang", viewer="chen.jing")] == [case_id]
    assert [c.id for c in seed.cases(data={"origin": "user_submission"}, viewer="gao.yan")] == [case_id]


def _cli(runner: CliRunner, url: str, *args: str) -> Any:
    return runner.invoke(cli, ["--db", url, *args], catch_exceptions=False)


def test_the_cli_in_a_subprocess_refuses_an_analysts_where_on_a_sensitive_field(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ops.db'}"
    key = tmp_path / "privacy.key"
    key.write_bytes(KEY)
    env = {**os.environ, "SOPFLOW_DB": url, "SOPFLOW_PRIVACY_KEY_FILE": str(key)}
    env.pop("SOPFLOW_USER", None)
    sopflow = str(Path(sys.executable).parent / "sopflow")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sopflow, *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )

    assert run("deploy", str(ROOT / "tests" / "fixtures" / "access")).returncode == 0
    assert run("--as", "alice", "start", "volunteer", "--data", json.dumps(VOLUNTEER)).returncode == 0
    guessed = run("--as", "ana", "list", "--where", "phone=13800138000")
    wrong = run("--as", "ana", "list", "--where", "phone=13900139000")
    assert guessed.returncode == wrong.returncode == 1 and guessed.stdout == wrong.stdout == ""
    assert guessed.stderr == wrong.stderr and "may not filter cases by `phone`" in guessed.stderr


# -- 2: people as tokens everywhere in a desensitised read ----------------------------------------------


def test_a_desensitised_read_names_people_only_as_tokens(seed: Engine, database_url: str) -> None:
    case_id = _claimed(seed)
    holder = token(KEY, "person", "wang.fang")
    item = seed.work_item(case_id, viewer="gao.yan")
    assert item.assignee == holder and "wang.fang" not in repr(item)
    reasons = [o.reason or "" for o in seed.options(case_id, "gao.yan", viewer="gao.yan")]
    assert any(holder in r for r in reasons) and not any("wang.fang" in r for r in reasons)
    assert seed.work_item(case_id, viewer="wang.fang").assignee == "wang.fang"  # a raw reader: as before
    assert any("wang.fang" in (o.reason or "") for o in seed.options(case_id, "li.na", viewer="li.na"))
    runner = CliRunner()
    for args in (["show", str(case_id)], ["--json", "show", str(case_id)]):
        shown = _cli(runner, database_url, "--as", "gao.yan", *args)
        assert shown.exit_code == 0, shown.output
        assert holder in shown.output
        assert not [u for u in ("wang.fang", "li.na") if u in shown.output], shown.output


# -- 16: `audit verify CASE` for a person --------------------------------------------------------------


def test_verify_of_a_case_outside_the_persons_view_is_as_for_a_missing_case(
    seed: Engine, database_url: str
) -> None:
    case_id = _claimed(seed)
    with pytest.raises(NotFound) as hidden:
        seed.verify(case_id, viewer="du.juan")
    assert hidden.value.message == f"case {case_id} does not exist"
    assert _refusals(seed) == [("du.juan", "view", f"case {case_id}")]
    assert seed.verify(case_id, viewer="wang.fang").cases == 1
    runner = CliRunner()
    outside = _cli(runner, database_url, "--as", "du.juan", "audit", "verify", str(case_id))
    missing = _cli(runner, database_url, "--as", "du.juan", "audit", "verify", "999")
    assert outside.exit_code == missing.exit_code == 1
    assert outside.output == missing.output.replace("case 999", f"case {case_id}")


# -- 21: a reused idempotency key ----------------------------------------------------------------------


def test_a_key_another_person_used_names_nothing_they_may_not_view(seed: Engine) -> None:
    first = seed.start("content-review", dict(SUBMISSION), actor="li.na", key="proposal-2026-117").case.id
    own = seed.start("emergency-response", dict(INCIDENT), actor="du.juan").case.id
    attempts = [
        lambda: seed.start("emergency-response", dict(INCIDENT), actor="du.juan", key="proposal-2026-117"),
        lambda: seed.fire(own, "acknowledge", actor="du.juan", key="proposal-2026-117"),
    ]
    for attempt in attempts:
        with pytest.raises(Conflict) as clash:
            attempt()
        said = clash.value.message
        assert "already in use" in said and "proposal-2026-117" in said
        assert not [w for w in ("li.na", "content-review", f"case {first}") if w in said], said
    assert _refusals(seed) == [
        ("du.juan", "start", "idempotency key proposal-2026-117"),
        ("du.juan", "modify", "idempotency key proposal-2026-117"),
    ]
    refused = [r for r in seed.history(own) if r.outcome == "refused"]
    assert refused and "li.na" not in (refused[-1].reason or "")
    # Someone who may view the first case is told who used the key on which case, as before.
    with pytest.raises(Conflict, match=f"li.na started case {first} of `content-review`"):
        seed.start("content-review", {"title": "t", "origin": "original"}, actor="wang.fang",
                   key="proposal-2026-117")  # fmt: skip


# -- 14: an export whose reader stops early -------------------------------------------------------------


class _Closing(io.RawIOBase):
    """An output whose reader goes away after `limit` bytes, as a pipe into `head -c`."""

    def __init__(self, limit: int) -> None:
        self.limit, self.taken = limit, 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        if self.taken + len(b) > self.limit:
            raise BrokenPipeError(32, "Broken pipe")
        self.taken += len(b)
        return len(b)


def test_an_export_whose_reader_stops_early_is_recorded_with_what_it_got(seed: Engine) -> None:
    for _ in range(6):
        _claimed(seed)
    with pytest.raises(ExportStopped, match=r"stopped after \d+ case\(s\)") as stopped:
        seed.export(_Closing(4000), "jsonl", reader="gao.yan")  # type: ignore[arg-type]
    assert stopped.value.exit_code == 1
    [entry] = [e for e in seed.access_log() if e.action == "export"]
    assert entry.actor == "gao.yan" and entry.outcome == "granted" and 0 < entry.records < 6
    assert entry.detail["stopped"] == "BrokenPipeError" and entry.detail["desensitised"] is True
    assert seed.verify().findings == ()  # the access log's chain holds the row


def test_an_export_piped_into_a_reader_that_stops_says_so_and_is_recorded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ops.db'}"
    env = {**os.environ, "SOPFLOW_DB": url}
    env.pop("SOPFLOW_USER", None)
    sopflow = str(Path(sys.executable).parent / "sopflow")
    sop = Engine(url)
    try:
        sop.deploy([DEFINITIONS])
        big = {**SUBMISSION, "title": "春季活动" * 200}
        for _ in range(60):  # far more than a pipe's buffer
            sop.start("content-review", dict(big), actor="li.na")
    finally:
        sop.close()
    reader = subprocess.Popen(
        [sopflow, "export", "--format", "jsonl"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert reader.stdout is not None and reader.stderr is not None
    reader.stdout.read(1000)
    reader.stdout.close()
    err = reader.stderr.read().decode()
    reader.stderr.close()
    assert reader.wait(timeout=60) == 1
    assert "the export stopped after" in err and "Traceback" not in err and "Exception ignored" not in err
    log = subprocess.run(
        [sopflow, "--json", "audit", "access"], env=env, capture_output=True, text=True, check=True
    )
    [entry] = json.loads(log.stdout)
    assert entry["action"] == "export" and entry["detail"]["stopped"] == "BrokenPipeError"


# -- 3: the access log's newest rows cut off -----------------------------------------------------------


def _cut_access_log(sop: Engine, from_seq: int) -> None:
    """Delete the access log's rows from `from_seq` on, as someone who switched its trigger off would."""
    with sop.store.engine.begin() as conn:
        if sop.store.dialect == "sqlite":
            conn.execute(text("DROP TRIGGER access_log_no_delete"))
        else:
            conn.execute(text("ALTER TABLE access_log DISABLE TRIGGER USER"))
        conn.execute(text("DELETE FROM access_log WHERE seq >= :seq"), {"seq": from_seq})


def test_an_anchor_names_the_access_log_rows_cut_off_its_end(seed: Engine, tmp_path: Path) -> None:
    case_id = _claimed(seed)
    for _ in range(2):
        with pytest.raises(NotFound):
            seed.case(case_id, viewer="du.juan")
    seed.export(io.BytesIO(), "jsonl")  # row 3: the export whose record is erased below
    anchor = seed.anchor(ANCHOR_KEY)
    assert anchor.access_log is not None and anchor.access_log[0] == 3
    assert seed.verify(anchors=[anchor]).ok
    _cut_access_log(seed, 2)
    assert seed.verify().ok  # a chain alone cannot tell: nothing after the cut is left to break
    later = seed.anchor(ANCHOR_KEY, previous=anchor)
    assert [f.subject for f in series_findings([anchor, later])] == ["access log"]
    [found] = seed.verify(anchors=[anchor]).findings
    assert found.subject == "access log" and found.problem.startswith("rows 2 to 3 are gone")
    # A new row in a removed one's place does not hide the cut: its hash is not the anchored one.
    with pytest.raises(NotFound):
        seed.case(case_id, viewer="du.juan")
    seed.export(io.BytesIO(), "csv")
    [found] = seed.verify(anchors=[anchor]).findings
    assert found.subject == "access log row 3" and "not the one" in found.problem
    # The anchor file holds the head, signed: the CLI names the rows, in process and in a subprocess.
    key_file, anchor_file = tmp_path / "anchor.key", tmp_path / "anc.json"
    key_file.write_bytes(ANCHOR_KEY)
    from sopflow.engine.anchor import write

    write(anchor, anchor_file)
    assert json.loads(anchor_file.read_text())["access_log"] == list(anchor.access_log)
    args = ["audit", "verify", "--all", "--anchor", str(anchor_file), "--key-file", str(key_file)]
    url = seed.store.engine.url.render_as_string(hide_password=False)
    inside = CliRunner().invoke(cli, ["--db", url, *args], catch_exceptions=False)
    assert inside.exit_code == 1 and "access log row 3: its hash is not the one" in inside.output
    env = {k: v for k, v in os.environ.items() if k != "SOPFLOW_USER"}
    sopflow = str(Path(sys.executable).parent / "sopflow")
    outside = subprocess.run(
        [sopflow, "--db", url, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert outside.returncode == 1 and "access log row 3: its hash is not the one" in outside.stderr


# -- 4: free text and contacts in the seed definitions --------------------------------------------------

PHONE, NAME = "13800138000", "用户小王"


def test_an_analysts_export_holds_no_phone_or_name_typed_into_free_text_or_contacts(seed: Engine) -> None:
    review = seed.start("content-review", dict(SUBMISSION), actor="li.na").case.id
    seed.fire(review, "submit", actor="li.na", payload={"material_url": "https://x/1"})
    seed.fire(review, "claim", actor="wang.fang")
    seed.fire(review, "return_for_fix", actor="wang.fang", payload={"reason": f"投稿人{NAME}电话{PHONE}"})
    surge = seed.start(
        "emergency-response",
        {"incident_type": "complaint_surge", "summary": f"{NAME}({PHONE})投诉无法登录"},
        actor="du.juan",
    ).case.id
    seed.fire(surge, "raise", actor="du.juan")
    seed.fire(surge, "acknowledge", actor="peng.li")
    seed.fire(
        surge,
        "team_formed",
        actor="peng.li",
        payload={"members": ["du.juan", "zhang.wei"], "product_contact": f"{NAME} {PHONE}",
                 "customer_service_contact": f"李四 {PHONE}"},
    )  # fmt: skip
    assert PHONE in json.dumps([seed.case(c).data for c in (review, surge)], ensure_ascii=False)
    for fmt in ("jsonl", "csv", "xes"):
        out = io.BytesIO()
        assert seed.export(out, fmt, reader="gao.yan").desensitised
        exported = out.getvalue().decode("utf-8")
        assert not [raw for raw in (PHONE, NAME, "李四", "du.juan", "zhang.wei") if raw in exported], fmt
    # gao.yan reads the review desensitised (the incident is her department's: she reads it raw).
    shown = json.dumps(
        [seed.case(review, viewer="gao.yan").data]
        + [r.body() for r in seed.history(review, viewer="gao.yan")],
        ensure_ascii=False,
    )
    assert PHONE not in shown and NAME not in shown


@pytest.mark.parametrize(
    ("name", "cls"),
    [("product_contact", "name"), ("customer_service_contact", "name"), ("contact", "name"),
     ("contact_phone", "phone"), ("contact_email", "id"), ("wechat", "id"), ("wechat_id", "id"),
     ("mobile", "phone"), ("tel", "phone"), ("联系人", "name"), ("客户联系方式", "phone"),
     ("紧急联系电话", "phone"), ("微信号", "id"), ("contract_id", None), ("telegram_channel", None)],
)  # fmt: skip
def test_contact_like_names_look_personal(name: str, cls: str | None) -> None:
    assert looks_personal(name) == cls


def test_the_checker_warns_of_an_unmarked_contact_field(tmp_path: Path) -> None:
    text_ = (DEFINITIONS / "emergency-response.yaml").read_text(encoding="utf-8")
    unmarked = text_.replace("\n      x-sensitive: name\n", "\n")  # the data fields' marks
    assert unmarked.count("_contact:\n      type: string\n      description:") == 2
    (tmp_path / "emergency-response.yaml").write_text(unmarked, encoding="utf-8")
    (tmp_path / "org.yaml").write_bytes((DEFINITIONS / "org.yaml").read_bytes())
    report = validate_paths([tmp_path])
    warned = sorted(p.message.split("`")[1] for p in report.problems if p.code == "unmarked-personal-field")
    assert warned == ["customer_service_contact", "product_contact"]


def test_in_a_subprocess_show_verify_and_a_reused_key_leak_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ops.db'}"
    key = tmp_path / "privacy.key"
    key.write_bytes(KEY)
    env = {**os.environ, "SOPFLOW_DB": url, "SOPFLOW_PRIVACY_KEY_FILE": str(key)}
    env.pop("SOPFLOW_USER", None)
    sopflow = str(Path(sys.executable).parent / "sopflow")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sopflow, *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )

    assert run("deploy", str(DEFINITIONS)).returncode == 0
    data = json.dumps(SUBMISSION)
    assert run("--as", "li.na", "start", "content-review", "--key", "p-117", "--data", data).returncode == 0
    assert (
        run("--as", "li.na", "fire", "1", "submit", "--data", '{"material_url": "https://x/1"}').returncode
        == 0
    )
    assert run("--as", "wang.fang", "fire", "1", "claim").returncode == 0
    shown = run("--as", "gao.yan", "show", "1")  # 2: the work line and the reasons name tokens
    assert shown.returncode == 0 and token(KEY, "person", "wang.fang") in shown.stdout
    assert "wang.fang" not in shown.stdout and "li.na" not in shown.stdout
    outside, missing = (
        run("--as", "du.juan", "audit", "verify", "1"),
        run("--as", "du.juan", "audit", "verify", "9"),
    )
    assert outside.returncode == missing.returncode == 1  # 16
    assert outside.stderr == missing.stderr.replace("case 9", "case 1") and outside.stdout == missing.stdout
    incident = json.dumps(INCIDENT)
    reused = run("--as", "du.juan", "start", "emergency-response", "--key", "p-117", "--data", incident)
    assert reused.returncode == 1 and "already in use" in reused.stderr  # 21
    assert not [w for w in ("li.na", "content-review", "case 1") if w in reused.stderr], reused.stderr


PROSE = ("reason", "comment", "comments", "note", "notes", "opinions", "rejection")


def _unmarked_prose(schema: Any, path: str) -> Iterator[str]:
    if not isinstance(schema, dict):
        return
    for name, sub in (schema.get("properties") or {}).items():
        if not isinstance(sub, dict):
            continue
        words = str(name).split("_")
        prose = sub.get("type") == "string" and "enum" not in sub and "format" not in sub
        if prose and words[-1] in PROSE and "x-sensitive" not in sub:
            yield f"{path}{name}"
        yield from _unmarked_prose(sub, f"{path}{name}.")


def _payloads(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "payload" and isinstance(value, dict):
                yield str(node.get("title", "")), value
            else:
                yield from _payloads(value)
    elif isinstance(node, list):
        for value in node:
            yield from _payloads(value)


@pytest.mark.parametrize("path", sorted(DEFINITIONS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_seed_reason_comment_and_note_is_marked_free_text(path: Path) -> None:
    """A reason, comment or note is where someone types a name or a phone number: never exported raw."""
    import yaml

    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict) or "states" not in document:
        return  # the org
    unmarked = list(_unmarked_prose(document.get("data"), "data."))
    for title, payload in _payloads(document["states"]):
        unmarked += _unmarked_prose(payload, f"payload {title}: ")
    assert unmarked == []
