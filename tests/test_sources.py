"""Every `source:` names a section the rulebooks really have.

The catalogue is built from the rulebook texts' own headings (../shared/seeds/00N_*.txt), not from
PROCESSES.md: PROCESSES.md summarises only the processes, while definitions and the org also cite the
sections on roles, principles and records. For the documents 000-003 a section is a chapter (一、), a
part (（一）), a numbered item (1.) or a lettered point (a.); for 004 an article (第九条) and its
numbered items. A `source:` is "DOC REF[, REF]...[; DOC REF...]", where REF is §CHAPTER, §CHAPTER(PART),
§CHAPTER(PART)ITEM, §CHAPTER(PART)ITEMletter or 第N条[ITEM], with ranges (1-3, 1b-c), items of the same
part after a comma (§三(一)1, 4), ranges of parts (§五(一)-(四)) and remarks in full-width brackets
（...）, which are not checked.
A rule the rulebooks do not state is an assumption of its definition, never a source.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sopflow.engine.definition.loader import read_yaml
from tests.conftest import DEFINITIONS, ROOT

SEEDS = ROOT.parent / "shared" / "seeds"
EXAMPLES = ROOT / "docs" / "examples"
NUMERALS = "一二三四五六七八九十"
Section = tuple[str, ...]

# The scraped pages carry the hosting site's text before the document and after it.
BODY_START = re.compile(r"文[檔档]簡介|文[档檔]简介")
BODY_END = re.compile(r"溫馨提示|温馨提示")
HEADING = re.compile(
    rf"(?P<chapter>(?<![第{NUMERALS}])[{NUMERALS}]+)、"
    rf"|[（(](?P<part>[{NUMERALS}]+)[)）]"
    rf"|(?P<article>第[{NUMERALS}]+[条條])"
    r"|(?<![0-9.])(?P<item>[0-9]{1,2})[.．](?![0-9])"
    r"|(?:^|\n)\s*(?P<letter>[a-z])[.．]",
    re.MULTILINE,
)


def body(text: str) -> str:
    start = BODY_START.search(text)
    text = text[start.end() :] if start else text
    end = BODY_END.search(text)
    return text[: end.start()] if end else text


def headings(text: str) -> dict[Section, str]:
    """Every section of one rulebook, as paths: ('三',), ('三', '一'), ('三', '一', '1'),
    ('三', '一', '1', 'a'); for 004 ('第九条',), ('第九条', '2'); each with its text (a section's text
    holds its subsections')."""
    found: dict[Section, str] = {}
    chapter = part = item = article = ""
    current: Section = ()
    text = body(text)
    last = 0
    for match in HEADING.finditer(text):
        for end in range(1, len(current) + 1):
            found[current[:end]] = found.get(current[:end], "") + text[last : match.start()]
        last = match.start()
        if match["chapter"]:
            chapter, part, item = match["chapter"], "", ""
            current = (chapter,)
        elif match["part"] and chapter:
            part, item = match["part"], ""
            current = (chapter, part)
        elif match["article"]:
            article, item = match["article"].replace("條", "条"), ""
            current = (article,)
        elif match["item"]:
            item = match["item"]
            current = (article, item) if article else (chapter, part, item) if part else (chapter, item)
        elif match["letter"] and item:
            parent = (article, item) if article else (chapter, part, item) if part else (chapter, item)
            current = (*parent, match["letter"])
        found.setdefault(current, "")
    for end in range(1, len(current) + 1):
        found[current[:end]] = found.get(current[:end], "") + text[last:]
    # Numbered lines before the first chapter (the preamble) belong to no section.
    return {section: words for section, words in found.items() if section[0]}


def catalogue() -> dict[str, dict[Section, str]]:
    books: dict[str, dict[Section, str]] = {}
    for path in sorted(SEEDS.glob("00[0-9]_*.txt")):
        sections = books.setdefault(path.name[:3], {})
        for section, words in headings(path.read_text(encoding="utf-8")).items():
            sections[section] = sections.get(section, "") + words
    return books


REF = re.compile(
    rf"^(?:§(?P<chapter>[{NUMERALS}]+)(?:[(（](?P<part>[{NUMERALS}]+)[)）](?:-[(（](?P<to_part>[{NUMERALS}]+)[)）])?)?|(?P<article>第[{NUMERALS}]+条))?"
    r"(?P<item>[0-9]{1,2})?(?P<letter>[a-z])?(?:-(?P<to_item>[0-9]{1,2})?(?P<to_letter>[a-z])?)?$"
)


def cited(source: str) -> Iterator[tuple[str, Section]]:
    """The sections one `source:` string names, as (rulebook, section path); a reference it cannot read
    at all is yielded with an empty path, so that it fails too."""
    for citation in re.split(r"[;；]", re.sub(r"（[^）]*）", "", source)):
        words = citation.strip().split(maxsplit=1)
        if not words:
            continue
        book, refs = words[0], (words[1] if len(words) > 1 else "")
        parent: Section = ()  # the chapter, part or article that bare items after a comma belong to
        for ref in (r.strip() for r in refs.split(",")):
            match = REF.match(ref)
            if not book.isdigit() or match is None or not ref:
                yield book, ()
                continue
            if match["article"]:
                parent = (match["article"],)
            elif match["chapter"]:
                parent = (match["chapter"], match["part"]) if match["part"] else (match["chapter"],)
            if not parent or (match["letter"] and not match["item"]):
                yield book, ()
            elif match["to_part"]:
                first, last = NUMERALS.index(match["part"]), NUMERALS.index(match["to_part"])
                for index in range(first, last + 1):
                    yield book, (parent[0], NUMERALS[index])
            elif not match["item"]:
                yield book, parent
            elif match["letter"]:
                stop = match["to_letter"] or match["letter"]
                for code in range(ord(match["letter"]), ord(stop) + 1):
                    yield book, (*parent, match["item"], chr(code))
            else:
                for number in range(int(match["item"]), int(match["to_item"] or match["item"]) + 1):
                    yield book, (*parent, str(number))


def sources(node: Any, at: str = "") -> Iterator[tuple[str, str]]:
    """Every `source:` string in a YAML tree, with where it is (a data schema's `source` property, an
    object, is not one)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "source" and isinstance(value, str):
                yield at or "(top)", value
            else:
                yield from sources(value, f"{at}.{key}" if at else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from sources(value, f"{at}[{index}]")


def files() -> list[Path]:
    every = [*DEFINITIONS.glob("*.yaml"), *EXAMPLES.glob("*.yaml")]
    return sorted(p for p in every if not p.name.endswith(".test.yaml"))


def unknown(path: Path, books: dict[str, dict[Section, str]]) -> list[str]:
    wrong = []
    for at, source in sources(read_yaml(path).data):
        for book, section in cited(source):
            if not section or section not in books.get(book, {}):
                named = "/".join(section) or "(unreadable)"
                wrong.append(f"{path.name} {at}: {source!r} names {book} {named}")
    return wrong


# A time the text states: a figure with its unit (≤4小時, 3個月), a cadence (每季度, 每月末) or a moment
# (月末, 年末, 立即 is not one: "at once" gives no limit to count).
STATED_TIME = re.compile(
    r"[0-9一二三四五六七八九十兩两半]+\s*[個个]?\s*(?:小[時时]|分[鐘钟]|天|日|周|週|星期|月|季度|年)"
    r"|每[^，。,]{0,2}(?:天|日|周|週|月|季度|年)|[月年]末|季度"
)


def deadline_sources(path: Path) -> Iterator[tuple[str, str]]:
    definition = read_yaml(path).data
    for deadline in definition.get("deadlines") or []:
        if "source" in deadline:
            yield deadline["name"], deadline["source"]


def unstated_limits(path: Path, books: dict[str, dict[Section, str]]) -> list[str]:
    """Deadlines citing sections none of which states a time: such a limit is an assumption."""
    wrong = []
    for name, source in deadline_sources(path):
        texts = [books.get(book, {}).get(section, "") for book, section in cited(source)]
        if not any(STATED_TIME.search(text) for text in texts):
            wrong.append(f"{path.name} deadline {name}: {source!r} states no time")
    return wrong


needs_seeds = pytest.mark.skipif(not SEEDS.is_dir(), reason="the rulebook texts are not beside the checkout")


@needs_seeds
def test_the_catalogue_holds_the_sections_the_processes_come_from() -> None:
    books = catalogue()
    assert {("三", "一", "1", "a"), ("三", "一", "1", "e"), ("二", "二", "3")} <= books["002"].keys()
    assert ("六", "一", "1", "a") in books["002"]
    assert {("三", "二", "4"), ("四", "三", "2"), ("五",)} <= books["000"].keys()
    assert {("四", "二"), ("四", "三", "1"), ("四", "一", "3"), ("六", "一", "1")} <= books["003"].keys()
    assert {("第九条",), ("第十一条", "2"), ("第七条", "1")} <= books["004"].keys()
    assert {("二",), ("四",)} <= books["001"].keys()
    assert ("九", "一", "1") not in books["002"] and ("第三十条",) not in books["004"]


@needs_seeds
@pytest.mark.parametrize("path", files(), ids=lambda p: p.name)
def test_every_source_names_a_section_of_the_rulebooks(path: Path) -> None:
    assert unknown(path, catalogue()) == []


@needs_seeds
def test_a_source_naming_a_missing_section_is_caught(tmp_path: Path) -> None:
    books = catalogue()
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        'source: "002 §三(一)1; 003 §四(三)1, 9"\n'
        'states:\n  a:\n    source: "002 §九(一)1"\n'
        'deadlines:\n  - source: "002 §六(一)1a-c; 004 第三十条"\n'
        'assumptions:\n  - source: "somewhere"\n',
        encoding="utf-8",
    )
    assert unknown(bad, books) == [
        "bad.yaml (top): '002 §三(一)1; 003 §四(三)1, 9' names 003 四/三/9",
        "bad.yaml states.a: '002 §九(一)1' names 002 九/一/1",
        "bad.yaml deadlines[0]: '002 §六(一)1a-c; 004 第三十条' names 002 六/一/1/c",
        "bad.yaml deadlines[0]: '002 §六(一)1a-c; 004 第三十条' names 004 第三十条",
        "bad.yaml assumptions[0]: 'somewhere' names somewhere (unreadable)",
    ]


@needs_seeds
@pytest.mark.parametrize("path", files(), ids=lambda p: p.name)
def test_a_deadline_cites_only_a_section_that_states_a_time(path: Path) -> None:
    assert unstated_limits(path, catalogue()) == []


@needs_seeds
def test_a_deadline_the_text_does_not_state_is_caught(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        'deadlines:\n  - {name: restore-within-4h, source: "002 §二(二)3"}\n'
        '  - {name: publish-within-4h, source: "002 §六(一)1a"}\n'
        '  - {name: self-assessment, source: "003 §四(三)1"}\n',
        encoding="utf-8",
    )
    wrong = unstated_limits(bad, catalogue())
    assert wrong == ["bad.yaml deadline restore-within-4h: '002 §二(二)3' states no time"]
