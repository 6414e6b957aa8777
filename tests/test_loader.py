"""Tests for the hardened YAML loader: core-schema values, positions, and refusal of hostile input.

Most tests run with both PyYAML parsers (libyaml and the pure-Python fallback), since the loader uses
libyaml when it is there and must behave the same without it.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sopflow.engine.definition import loader
from sopflow.engine.definition.loader import Document, Limits, parse_yaml, read_yaml
from sopflow.engine.errors import DefinitionError, Problem

PARSERS = [pytest.param(yaml.SafeLoader, id="python")]
if getattr(yaml, "__with_libyaml__", False):
    PARSERS.append(pytest.param(yaml.CSafeLoader, id="libyaml"))


@pytest.fixture(params=PARSERS, autouse=True)
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setattr(loader, "_LOADER", request.param)
    yield request.param


def refused(text: str | bytes, limits: Limits | None = None) -> Problem:
    """The one problem parse_yaml reports for text it refuses."""
    with pytest.raises(DefinitionError) as info:
        parse_yaml(text, "t.yaml", limits or Limits())
    assert len(info.value.problems) == 1
    problem = info.value.problems[0]
    assert problem.file == "t.yaml"
    assert problem.severity == "error"
    return problem


def at(problem: Problem) -> tuple[str, int, int]:
    return problem.code, problem.line, problem.col


# ---------------------------------------------------------------- data and positions


NESTED = """\
# a comment
id: demo
states:
  draft:
    on:
      submit: {to: review}
  review:
    by: [editor, "$starter"]
"""


def test_builds_plain_data_in_order() -> None:
    doc = parse_yaml(NESTED, "demo.yaml")
    assert isinstance(doc, Document)
    assert doc.file == "demo.yaml"
    assert doc.text == NESTED
    assert doc.data == {
        "id": "demo",
        "states": {"draft": {"on": {"submit": {"to": "review"}}}, "review": {"by": ["editor", "$starter"]}},
    }
    assert list(doc.data) == ["id", "states"]
    assert list(doc.data["states"]) == ["draft", "review"]


def test_records_value_and_key_positions() -> None:
    doc = parse_yaml(NESTED, "demo.yaml")
    assert doc.positions[()] == (2, 1)
    assert doc.positions[("id",)] == (2, 5)
    assert doc.key_positions[("id",)] == (2, 1)
    assert doc.key_positions[("states", "draft")] == (4, 3)
    assert doc.positions[("states", "draft", "on", "submit")] == (6, 15)
    assert doc.key_positions[("states", "draft", "on", "submit", "to")] == (6, 16)
    assert doc.positions[("states", "draft", "on", "submit", "to")] == (6, 20)
    assert doc.positions[("states", "review", "by", 0)] == (8, 10)
    assert doc.positions[("states", "review", "by", 1)] == (8, 18)
    assert ("states", "review", "by", 0) not in doc.key_positions


def test_columns_count_characters_not_bytes() -> None:
    doc = parse_yaml("名称: 值\nb: [x, é, ü]\n", "t.yaml")
    assert doc.positions[("名称",)] == (1, 5)
    assert doc.positions[("b", 2)] == (2, 11)


def test_where_prefers_key_then_value_then_nearest_ancestor() -> None:
    doc = parse_yaml(NESTED, "demo.yaml")
    path = ("states", "draft", "on", "submit", "to")
    assert doc.where(path) == (6, 20)
    assert doc.where(path, key=True) == (6, 16)
    assert doc.where(("states", "review", "by", 1), key=True) == (8, 18)  # a list item has no key
    assert doc.where(("states", "draft", "missing", 3)) == (5, 5)  # draft's value starts at `on:`
    assert doc.where(("nowhere",)) == (2, 1)
    empty = Document("x.yaml", "", {}, {}, {})
    assert empty.where(("a", "b"), key=True) == (1, 1)


def test_positions_are_read_only() -> None:
    doc = parse_yaml("a: 1\n", "t.yaml")
    with pytest.raises(TypeError):
        doc.positions[("b",)] = (1, 1)  # type: ignore[index]


# ---------------------------------------------------------------- YAML 1.2 core schema


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("null", None),
        ("Null", None),
        ("NULL", None),
        ("~", None),
        ("", None),
        ("true", True),
        ("True", True),
        ("TRUE", True),
        ("false", False),
        ("False", False),
        ("FALSE", False),
        ("0", 0),
        ("12", 12),
        ("-3", -3),
        ("+7", 7),
        ("012", 12),
        ("0o17", 15),
        ("0x1F", 31),
        ("1.5", 1.5),
        ("-2.", -2.0),
        (".5", 0.5),
        ("1e3", 1000.0),
        ("6.02E+2", 602.0),
        (".inf", math.inf),
        ("-.Inf", -math.inf),
        ("+.INF", math.inf),
    ],
)
def test_plain_scalars_resolve_by_the_core_schema(text: str, expected: Any) -> None:
    value = parse_yaml(f"v: {text}\n", "t.yaml").data["v"]
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize("text", [".nan", ".NaN", ".NAN"])
def test_nan(text: str) -> None:
    assert math.isnan(parse_yaml(f"v: {text}\n", "t.yaml").data["v"])


@pytest.mark.parametrize(
    "text",
    [
        "on",
        "off",
        "On",
        "OFF",
        "yes",
        "no",
        "Yes",
        "NO",
        "y",
        "n",
        "Y",
        "N",  # YAML 1.1 booleans
        "2026-10-01",
        "2026-10-01T09:00:00Z",  # YAML 1.1 timestamps
        "1_000",
        "0b101",
        "12:30",
        "0o",
        "0x",
        "1e",
        ".",
        "nan",
        "inf",
        "tRUE",
        "nULL",
    ],
)
def test_other_plain_scalars_stay_strings(text: str) -> None:
    assert parse_yaml(f"v: {text}\n", "t.yaml").data["v"] == text


def test_on_yes_no_as_keys_and_values() -> None:
    doc = parse_yaml("on:\n  yes: no\n  off: y\n", "t.yaml")
    assert doc.data == {"on": {"yes": "no", "off": "y"}}


@pytest.mark.parametrize("text", ['"true"', "'12'", '"null"', "''", '"1.5"', "'~'", '"on"'])
def test_quoted_scalars_are_strings(text: str) -> None:
    value = parse_yaml(f"v: {text}\n", "t.yaml").data["v"]
    assert isinstance(value, str)
    assert value == text[1:-1]


def test_block_scalars_are_strings() -> None:
    doc = parse_yaml("a: |\n  12\nb: >\n  true\n", "t.yaml")
    assert doc.data == {"a": "12\n", "b": "true\n"}


def test_non_string_keys_become_their_text() -> None:
    doc = parse_yaml("1: a\ntrue: b\n~: c\n0x10: d\n", "t.yaml")
    assert doc.data == {"1": "a", "true": "b", "~": "c", "0x10": "d"}
    assert all(isinstance(k, str) for k in doc.data)
    assert doc.key_positions[("true",)] == (2, 1)


def test_integer_with_too_many_digits_is_refused() -> None:
    assert at(refused("v: " + "9" * 5000 + "\n")) == ("yaml-number", 1, 4)


def test_allowed_tags_convert() -> None:
    doc = parse_yaml(
        "a: !!str 12\nb: !!int '12'\nc: !!float 1\nd: !!null ''\ne: !!bool 'true'\n"
        "f: !!map {x: 1}\ng: !!seq [1]\nh: !!int 0x10\n",
        "t.yaml",
    )
    assert doc.data == {"a": "12", "b": 12, "c": 1.0, "d": None, "e": True, "f": {"x": 1}, "g": [1], "h": 16}
    assert type(doc.data["c"]) is float


@pytest.mark.parametrize(
    ("text", "col"),
    [
        ("v: !!python/object:os.system {}\n", 4),
        ("v: !!python/object/apply:os.system ['ls']\n", 4),
        ("v: !!python/name:os.system ''\n", 4),
        ("v: !custom x\n", 4),
        ("v: !!binary aGVsbG8=\n", 4),
        ("v: !!timestamp 2026-10-01\n", 4),
        ("v: !!set {a: null}\n", 4),
        ("v: !!omap [a: 1]\n", 4),
        ("v: !!map [1]\n", 4),
        ("v: !!seq {a: 1}\n", 4),
        ("v: !!map x\n", 4),
        ("v: !!int abc\n", 4),
        ("v: !!bool yes\n", 4),
        ("v: !!null x\n", 4),
        ("v: ! x\n", 4),
        ("%TAG !p! tag:yaml.org,2002:python/\n---\nv: !p!object:os.system {}\n", 4),
    ],
)
def test_other_tags_are_refused(text: str, col: int) -> None:
    problem = refused(text)
    assert problem.code == "yaml-tag"
    assert (problem.line, problem.col) == (text.count("\n"), col)
    assert problem.hint is not None


def test_python_object_tag_at_top_level_names_the_tag() -> None:
    problem = refused("!!python/object/new:os.system [echo hacked]\n")
    assert at(problem) == ("yaml-tag", 1, 1)
    assert "!!python/object/new:os.system" in problem.message


# ---------------------------------------------------------------- keys


def test_duplicate_key_is_refused_at_the_second_key() -> None:
    problem = refused("a: 1\nstates:\n  draft: {}\n  review: {}\n  draft: {}\n")
    assert at(problem) == ("yaml-duplicate-key", 5, 3)
    assert "`draft`" in problem.message
    assert problem.hint is not None and "line 3" in problem.hint


def test_duplicate_key_in_a_flow_mapping() -> None:
    assert at(refused("v: {a: 1, b: 2, a: 3}\n")) == ("yaml-duplicate-key", 1, 17)


def test_keys_that_differ_only_by_type_are_duplicates() -> None:
    # `1` and "1" are both the key "1" once keys are strings.
    assert at(refused("1: a\n'1': b\n")) == ("yaml-duplicate-key", 2, 1)


def test_same_key_in_different_mappings_is_fine() -> None:
    assert parse_yaml("a: {x: 1}\nb: {x: 2}\n", "t.yaml").data == {"a": {"x": 1}, "b": {"x": 2}}


def test_merge_key_is_refused() -> None:
    problem = refused("base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\n")
    assert at(problem) == ("yaml-merge-key", 3, 3)
    assert problem.hint is not None and "repeat the keys" in problem.hint


def test_quoted_merge_key_is_an_ordinary_key() -> None:
    assert parse_yaml("'<<': 1\n", "t.yaml").data == {"<<": 1}


@pytest.mark.parametrize(("text", "line", "col"), [("? [a, b]\n: 1\n", 1, 3), ("{[a]: 1}\n", 1, 2)])
def test_collection_keys_are_refused(text: str, line: int, col: int) -> None:
    assert at(refused(text)) == ("yaml-key", line, col)


# ---------------------------------------------------------------- documents


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n", "--- \n...\n", "   \n"])
def test_empty_file_is_refused(text: str) -> None:
    assert at(refused(text)) == ("yaml-empty", 1, 1)


def test_explicit_null_document_is_data() -> None:
    assert parse_yaml("null\n", "t.yaml").data is None


def test_second_document_is_refused_where_it_starts() -> None:
    problem = refused("a: 1\n---\nb: 2\n")
    assert at(problem) == ("yaml-multiple-documents", 2, 1)


def test_document_markers_around_one_document_are_fine() -> None:
    assert parse_yaml("%YAML 1.2\n---\na: 1\n...\n", "t.yaml").data == {"a": 1}


# ---------------------------------------------------------------- syntax and encoding


def test_syntax_error_has_position_and_problem() -> None:
    problem = refused("title: a: b\n")
    assert at(problem) == ("yaml-syntax", 1, 9)
    assert "mapping values are not allowed" in problem.message
    assert problem.hint is not None and "quoted" in problem.hint


def test_tab_indentation_is_explained() -> None:
    problem = refused("a:\n\tb: 1\n")
    assert at(problem) == ("yaml-syntax", 2, 1)
    assert problem.hint is not None and "tabs" in problem.hint


def test_unclosed_flow_sequence() -> None:
    problem = refused("a: [1, 2\nb: 3\n")
    assert problem.code == "yaml-syntax"
    assert problem.line >= 2


def test_invalid_utf8_is_refused_at_the_bad_byte() -> None:
    problem = refused("a: 1\nb: é".encode() + b"\xff\n")
    assert at(problem) == ("yaml-encoding", 2, 5)
    assert problem.hint == "save the file as UTF-8"


def test_utf16_is_refused() -> None:
    assert at(refused("a: 1\n".encode("utf-16"))) == ("yaml-encoding", 1, 1)


@pytest.mark.parametrize("text", [b"\xef\xbb\xbfa: 1\n", "\ufeffa: 1\n"])
def test_byte_order_mark_is_accepted(text: str | bytes) -> None:
    doc = parse_yaml(text, "t.yaml")
    assert doc.data == {"a": 1}
    assert doc.key_positions[("a",)] == (1, 1)


def test_control_character_is_refused_at_its_place() -> None:
    problem = refused("a: 1\nb: x\x07y\n")
    assert at(problem) == ("yaml-encoding", 2, 5)
    assert "U+0007" in problem.message


def test_lone_surrogate_is_refused() -> None:
    assert refused("a: \ud800\n").code == "yaml-encoding"


# ---------------------------------------------------------------- anchors and aliases


def test_alias_reuses_the_anchored_value() -> None:
    doc = parse_yaml("a: &x {k: [1, 2]}\nb: *x\nc: &s text\nd: *s\n", "t.yaml")
    assert doc.data == {"a": {"k": [1, 2]}, "b": {"k": [1, 2]}, "c": "text", "d": "text"}
    assert doc.data["b"] is doc.data["a"]
    assert doc.positions[("b",)] == (2, 4)


def test_alias_as_key_uses_the_scalar_text() -> None:
    assert parse_yaml("k: &k name\nm:\n  *k : 1\n", "t.yaml").data == {"k": "name", "m": {"name": 1}}


def test_alias_of_a_collection_as_key_is_refused() -> None:
    assert at(refused("a: &x [1]\nb:\n  *x : 1\n")) == ("yaml-key", 3, 3)


def test_undefined_alias_is_refused() -> None:
    assert at(refused("a: 1\nb: *nowhere\n")) == ("yaml-alias", 2, 4)


def test_recursive_alias_is_refused() -> None:
    assert at(refused("a: &x [1, {b: *x}]\n")) == ("yaml-alias", 1, 15)


# ---------------------------------------------------------------- limits


def test_node_limit_counts_aliases_expanded() -> None:
    # root 1 + key a 1 + list 6 + key b 1 + alias 6 + key c 1 + alias 6 = 22 nodes
    text = "a: &x [1, 2, 3, 4, 5]\nb: *x\nc: *x\n"
    assert parse_yaml(text, "t.yaml", Limits(max_nodes=22)).data["c"] == [1, 2, 3, 4, 5]
    assert at(refused(text, Limits(max_nodes=21))) == ("yaml-too-many-nodes", 3, 4)


def test_node_limit_without_aliases() -> None:
    text = "[" + ", ".join(["1"] * 20) + "]\n"
    assert len(parse_yaml(text, "t.yaml", Limits(max_nodes=21)).data) == 20
    assert refused(text, Limits(max_nodes=20)).code == "yaml-too-many-nodes"


def billion_laughs(levels: int = 9) -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        name, prev = chr(ord("a") + i), chr(ord("a") + i - 1)
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused() -> None:
    problem = refused(billion_laughs())
    # 9 + 90 + 900 + 9,000 + 90,000 values by line 5; line 6 passes 100,000.
    assert at(problem) == ("yaml-too-many-nodes", 6, 8)


def test_alias_bomb_of_mappings_is_refused() -> None:
    lines = ["a0: &a0 {k: v}"]
    for i in range(1, 12):
        lines.append(f"a{i}: &a{i} {{" + ", ".join(f"k{j}: *a{i - 1}" for j in range(10)) + "}")
    assert refused("\n".join(lines) + "\n").code == "yaml-too-many-nodes"


def test_deeply_nested_brackets_are_refused() -> None:
    # Where: at the 65th level (the events' depth check), or where libyaml's scanner, which since
    # PyYAML 6.0.4 stops flow nesting at 1,000 levels while scanning ahead for a key, gave up first.
    assert at(refused("[" * 50_000)) in (("yaml-too-deep", 1, 65), ("yaml-too-deep", 1, 1001))
    assert at(refused("{a: " * 50_000)) in (("yaml-too-deep", 1, 1 + 64 * 4), ("yaml-too-deep", 1, 4001))


def test_depth_limit_is_exact() -> None:
    ok = "[" * 5 + "]" * 5 + "\n"
    assert parse_yaml(ok, "t.yaml", Limits(max_depth=5)).data == [[[[[]]]]]
    assert at(refused("[" * 6 + "]" * 6, Limits(max_depth=5))) == ("yaml-too-deep", 1, 6)


def test_block_nesting_is_limited() -> None:
    text = "".join("  " * i + f"k{i}:\n" for i in range(10))
    assert at(refused(text, Limits(max_depth=4))) == ("yaml-too-deep", 5, 9)


def test_alias_cannot_smuggle_depth() -> None:
    text = "a: &a [[[1]]]\nb: [[*a]]\n"
    assert parse_yaml(text, "t.yaml", Limits(max_depth=6)).data["b"] == [[[[[1]]]]]
    assert at(refused(text, Limits(max_depth=5))) == ("yaml-too-deep", 2, 6)


def test_big_text_is_refused_before_parsing() -> None:
    assert at(refused("a: " + "x" * (20 * 1024 * 1024))) == ("yaml-too-large", 1, 1)
    assert refused(b"a: " + b"[" * (2 * 1024 * 1024)).code == "yaml-too-large"


def test_size_limit_counts_utf8_bytes() -> None:
    text = "a: " + "é" * 600_000  # 600,003 characters, 1,200,003 bytes
    assert refused(text).code == "yaml-too-large"
    assert parse_yaml(text, "t.yaml", Limits(max_bytes=1_200_003)).data["a"] == "é" * 600_000


def test_one_mib_single_line() -> None:
    assert refused("a: " + "x" * 1024 * 1024).code == "yaml-too-large"
    long_line = "x" * (1024 * 1024 - 10)
    assert parse_yaml("a: " + long_line + "\n", "t.yaml").data == {"a": long_line}


# ---------------------------------------------------------------- files


def test_read_yaml_parses_a_file_and_names_it(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text("a: [1, 2]\n", encoding="utf-8")
    doc = read_yaml(path)
    assert doc.data == {"a": [1, 2]}
    assert doc.file == str(path)
    assert read_yaml(path, display="definitions/demo.yaml").file == "definitions/demo.yaml"


def test_twenty_mib_file_is_refused_by_size(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as handle:
        handle.write(b"a: ")
        handle.write(b"[" * (20 * 1024 * 1024))
    with pytest.raises(DefinitionError) as info:
        read_yaml(path, display="huge.yaml")
    (problem,) = info.value.problems
    assert at(problem) == ("yaml-too-large", 1, 1)
    assert problem.file == "huge.yaml"
    assert f"{20 * 1024 * 1024 + 3:,}" in problem.message  # the size came from stat


def test_file_at_the_limit_is_read(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "edge.yaml"
    path.write_bytes(b"a: " + b"x" * 97)
    assert read_yaml(path, Limits(max_bytes=100)).data == {"a": "x" * 97}
    path.write_bytes(b"a: " + b"x" * 98)
    with pytest.raises(DefinitionError) as info:
        read_yaml(path, Limits(max_bytes=100))
    assert info.value.problems[0].code == "yaml-too-large"


@pytest.mark.parametrize("name", ["missing.yaml", "."])
def test_unreadable_path_is_a_definition_error(tmp_path: pathlib.Path, name: str) -> None:
    with pytest.raises(DefinitionError) as info:
        read_yaml(tmp_path / name)
    assert info.value.problems[0].code == "yaml-read"


def test_read_yaml_refuses_bad_encoding(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: café\n".encode("latin-1"))
    with pytest.raises(DefinitionError) as info:
        read_yaml(path)
    assert at(info.value.problems[0]) == ("yaml-encoding", 1, 10)


# ---------------------------------------------------------------- anything else


YAML_PIECES = [*"[]{}:,-?&*!|>'\"#%@`\\\n\t ab1.~", "\u00e9", "<<", "---", "!!", "\ufeff", "  ", "x: ", "- "]
YAMLISH = st.lists(st.sampled_from(YAML_PIECES), max_size=60).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(YAMLISH, st.text(max_size=80), st.binary(max_size=80)))
def test_any_input_gives_a_document_or_a_definition_error(text: str | bytes) -> None:
    try:
        doc = parse_yaml(text, "t.yaml")
    except DefinitionError as err:
        assert len(err.problems) == 1
        assert err.problems[0].code.startswith("yaml-")
        assert err.problems[0].line >= 1 and err.problems[0].col >= 1
    else:
        assert all(line >= 1 and col >= 1 for line, col in doc.positions.values())
