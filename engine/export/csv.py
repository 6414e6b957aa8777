"""CSV: one row per event, its case's columns repeated, UTF-8 with a byte-order mark so that a spreadsheet
opens Chinese text without mojibake. A text cell that a spreadsheet would read as a formula (it begins
with =, +, -, @, a tab or a carriage return) is written with a leading apostrophe."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from typing import Any, BinaryIO

COLUMNS = (
    "case", "definition", "version", "case_state", "case_open", "starter", "assignee", "created_at",
    "seq", "at", "event", "from_state", "to_state", "outcome", "actor", "role", "on_behalf_of",
    "comment", "reason", "payload", "data_change", "case_data",
)  # fmt: skip
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    if isinstance(value, Mapping | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    return value


class CsvWriter:
    def __init__(self, out: BinaryIO) -> None:
        self._text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
        self._rows = csv.writer(self._text)

    def begin(self, meta: Mapping[str, Any]) -> None:
        self._text.write("\ufeff")
        self._rows.writerow(COLUMNS)

    def case(self, case: Mapping[str, Any], events: list[dict[str, Any]]) -> None:
        head = [
            case["case"], case["definition"], case["version"], case["state"], case["open"], case["starter"],
            case["assignee"], case["created_at"],
        ]  # fmt: skip
        data = case["data"]
        for e in events:
            row = [
                *head, e["seq"], e["at"], e["event"], e["from_state"], e["to_state"], e["outcome"],
                e["actor"], e["role"], e["on_behalf_of"], e["comment"], e["reason"], e["payload"],
                e["data_change"], data,
            ]  # fmt: skip
            self._rows.writerow([_cell(v) for v in row])

    def end(self) -> None:
        self._text.flush()
        self._text.detach()  # the caller's stream stays open
