"""What every meaning check shares: the context it reads, and how it words and orders a problem."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sopflow.engine.definition.loader import Document
from sopflow.engine.definition.model import Definition, Org, Path
from sopflow.engine.errors import Problem, Severity


@dataclass(frozen=True, slots=True)
class Context:
    """What a check reads: the built definition, its document (for positions and the text as
    written) and the org, when there is one."""

    defn: Definition
    doc: Document
    org: Org | None

    def problem(
        self,
        path: Path,
        code: str,
        message: str,
        hint: str | None = None,
        *,
        key: bool = False,
        severity: Severity = "error",
    ) -> Problem:
        """The module's `problem`, in this definition's document."""
        return problem(self.doc, path, code, message, hint, key=key, severity=severity)

    def raw(self, path: Path) -> Any:
        """The module's `raw`, in this definition's document."""
        return raw(self.doc, path)


Check = Callable[[Context], Iterator[Problem]]


def problem(
    doc: Document,
    path: Path,
    code: str,
    message: str,
    hint: str | None = None,
    *,
    key: bool = False,
    severity: Severity = "error",
) -> Problem:
    """A problem placed where `path` starts in `doc` (where its key starts, if `key`)."""
    line, col = doc.where(path, key=key)
    return Problem(doc.file, line, col, code, message, hint, severity)


def raw(doc: Document, path: Path) -> Any:
    """The plain value at `path` in the document, or None when there is none."""
    node: Any = doc.data
    for part in path:
        in_list = isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node)
        in_mapping = isinstance(part, str) and isinstance(node, Mapping) and part in node
        if not (in_list or in_mapping):
            return None
        node = node[part]
    return node


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """A hint naming the closest candidate, if one is close enough."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else None


def sort_problems(problems: Iterable[Problem]) -> list[Problem]:
    """File, then position, then code: a stable order for people and for tests."""
    return sorted(problems, key=lambda p: (p.file, p.line, p.col, p.code, p.message))
