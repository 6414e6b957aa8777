"""JSON Lines: one case per line, with its events in order; UTF-8, no byte-order mark."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, BinaryIO


class JsonLinesWriter:
    def __init__(self, out: BinaryIO) -> None:
        self._out = out

    def begin(self, meta: Mapping[str, Any]) -> None:
        """JSON Lines has no header: every line is a case."""

    def case(self, case: Mapping[str, Any], events: list[dict[str, Any]]) -> None:
        line = json.dumps({**case, "events": events}, ensure_ascii=False, separators=(",", ":"))
        self._out.write(line.encode("utf-8") + b"\n")

    def end(self) -> None:
        self._out.flush()
