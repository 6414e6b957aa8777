"""Desensitising rules (engine.privacy): an address keeps its province (each of the 34 divisions, in its
official, short and English forms), an age becomes a band, an ID, phone or name a keyed token that is the
same for the same person across exports and differs under another key, free text is dropped; and the
checker's classification codes."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pytest

from sopflow.engine.definition.validate import validate_paths
from sopflow.engine.errors import ConfigurationError
from sopflow.engine.privacy import (
    DROP,
    UNKNOWN,
    Desensitiser,
    age_band,
    load_key,
    looks_personal,
    marks_of,
    province,
    token,
)
from sopflow.engine.provinces import PROVINCES

KEY = b"k" * 32
TODAY = date(2026, 12, 6)


def test_the_table_has_the_34_provincial_level_divisions() -> None:
    assert len(PROVINCES) == 34
    names = [official for _code, official, _names in PROVINCES]
    assert len(set(names)) == 34
    assert sum(n.endswith("省") for n in names) == 23
    assert sum(n.endswith("自治区") for n in names) == 5
    assert sum(n.endswith("特别行政区") for n in names) == 2
    assert {"北京市", "天津市", "上海市", "重庆市"} <= set(names)


@pytest.mark.parametrize(("code", "official", "names"), PROVINCES, ids=[p[0] for p in PROVINCES])
def test_every_division_is_found_by_each_of_its_names(
    code: str, official: str, names: tuple[str, ...]
) -> None:
    assert province(f"{official}某某路1号") == official
    for name in names:
        address = f"12 Some Road, {name}" if name.isascii() else f"{name}某区某路1号"
        assert province(address) == official, (name, address)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("广东省深圳市南山区科技园", "广东省"),
        ("中国广西壮族自治区南宁市", "广西壮族自治区"),
        ("中华人民共和国香港特别行政区中环", "香港特别行政区"),
        ("新疆乌鲁木齐市", "新疆维吾尔自治区"),
        ("陕西省西安市", "陕西省"),
        ("山西省太原市", "山西省"),
        ("Room 5, 88 Nanjing Road, Shanghai", "上海市"),
        ("Shaanxi, Xi'an", "陕西省"),
        ("深圳市南山区", UNKNOWN),
        ("", UNKNOWN),
    ],
)
def test_an_address_keeps_its_province_only(address: str, expected: str) -> None:
    assert province(address) == expected


@pytest.mark.parametrize(
    ("value", "band"),
    [(0, "0-17"), (17, "0-17"), (18, "18-24"), (24.5, "18-24"), (25, "25-34"), (44, "35-44"), (64, "55-64"),
     (65, "65+"), (101, "65+"), ("33", "25-34"), ("1990-12-07", "35-44"), ("1990-12-06", "35-44"),
     ("2008-12-07", "0-17"), ("2008-12-06", "18-24"), (-1, UNKNOWN), (200, UNKNOWN), ("old", UNKNOWN),
     (True, UNKNOWN)],
)  # fmt: skip
def test_an_age_becomes_a_band(value: object, band: str) -> None:
    assert age_band(value, TODAY) == band


def test_a_token_is_keyed_stable_and_normalised() -> None:
    a = token(KEY, "phone", "+86 138-0013-8000")
    assert a == token(KEY, "phone", "13800138000") == token(KEY, "phone", "0086 13800138000")
    assert a != token(b"x" * 32, "phone", "13800138000"), "another key, another token"
    assert token(KEY, "id", "11010519491231002x") == token(KEY, "id", "110105 19491231002X")
    assert token(KEY, "name", "张 三") == token(KEY, "name", " 张 三 ")
    assert "13800138000" not in a and len(a) == 64


def test_data_is_desensitised_by_its_marks_nested_and_in_lists() -> None:
    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "phone": {"type": "string", "x-sensitive": "phone"},
            "notes": {"type": "string", "x-sensitive": "free_text"},
            "applicant": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "x-sensitive": "name"},
                    "address": {"type": "string", "x-sensitive": "address"},
                },
            },
            "ages": {"type": "array", "items": {"type": "integer", "x-sensitive": "age"}},
            "family": {
                "type": "array",
                "items": {"type": "object", "properties": {"id": {"type": "string", "x-sensitive": "id"}}},
            },
        },
    }
    marks = marks_of(schema)
    d = Desensitiser(KEY, TODAY)
    out = d.data(
        marks,
        {
            "title": "春季活动",
            "phone": "13800138000",
            "notes": "住在北京市朝阳区，电话 13800138000",
            "applicant": {"name": "张三", "address": "北京市朝阳区建国路1号"},
            "ages": [5, 30],
            "family": [{"id": "110105194912310021"}],
        },
    )
    assert out == {
        "title": "春季活动",
        "phone": token(KEY, "phone", "13800138000"),
        "applicant": {"name": token(KEY, "name", "张三"), "address": "北京市"},
        "ages": ["0-17", "25-34"],
        "family": [{"id": token(KEY, "id", "110105194912310021")}],
    }
    assert d.value("free_text", "x") is DROP
    assert d.person("li.na") == token(KEY, "person", "li.na") and d.person("$system") == "$system"


@pytest.mark.parametrize(
    ("name", "cls"),
    [("phone", "phone"), ("contact_phone", "phone"), ("id_number", "id"), ("home_address", "address"),
     ("age", "age"), ("birthday", "age"), ("contact_name", "name"), ("project_name", None), ("title", None),
     ("page", None), ("stage", None), ("name", None)],
)  # fmt: skip
def test_fields_that_look_personal(name: str, cls: str | None) -> None:
    assert looks_personal(name) == cls


def test_the_privacy_key_lives_in_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOPFLOW_PRIVACY_KEY_FILE", raising=False)
    with pytest.raises(ConfigurationError, match="no privacy key"):
        load_key()
    short = tmp_path / "short.key"
    short.write_bytes(b"abc")
    with pytest.raises(ConfigurationError, match="at least 32"):
        load_key(short)
    good = tmp_path / "privacy.key"
    good.write_bytes(os.urandom(32).hex().encode() + b"\n")
    monkeypatch.setenv("SOPFLOW_PRIVACY_KEY_FILE", str(good))
    assert load_key() == good.read_bytes().rstrip(b"\n")


def test_the_checker_names_an_unknown_class_and_an_unmarked_personal_field(tmp_path: Path) -> None:
    root = Path(__file__).parent / "bad"
    report = validate_paths(
        [root / "unknown-sensitive-class-1.yaml", root / "unmarked-personal-field-1.yaml", root / "org.yaml"]
    )
    found = {(p.code, p.severity) for p in report.problems}
    assert found == {("unknown-sensitive-class", "error"), ("unmarked-personal-field", "warning")}
    assert not [p for p in report.problems if p.code == "unknown-schema-keyword"], "x-sensitive is a keyword"
