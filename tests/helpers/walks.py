"""Walk files (tests/walks/*.yaml): each definition's documented main path and its main refusal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

WALKS = Path(__file__).resolve().parent.parent / "walks"
KINDS = {"not-permitted", "guard-refused", "invalid-data", "not-found", "not-available", "conflict"}


def walk_files() -> list[Path]:
    return sorted(WALKS.glob("*.yaml"))


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data


def walk_cases() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(definition id, case name, case) for every case of every walk file."""
    for path in walk_files():
        walk = load(path)
        for case in walk["cases"]:
            yield walk["definition"], case["name"], case


def payloads(definition_id: str) -> dict[str, dict[str, Any]]:
    """For each event of a definition, the first payload its walk file gives it."""
    found: dict[str, dict[str, Any]] = {}
    for path in walk_files():
        walk = load(path)
        if walk["definition"] != definition_id:
            continue
        for case in walk["cases"]:
            for step in case["steps"]:
                if "payload" in step and "expect_refused" not in step:
                    found.setdefault(step["event"], step["payload"])
    return found


def start_data(definition_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Every (starter, data) a walk file starts a case with."""
    out = []
    for path in walk_files():
        walk = load(path)
        if walk["definition"] == definition_id:
            out += [(c["start"]["as"], c["start"]["data"]) for c in walk["cases"]]
    return out
