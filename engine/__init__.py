"""sopflow's engine: what an embedder imports.

    from sopflow.engine import Engine
    with Engine("sqlite:///cases.db") as sop:
        sop.deploy([Path("definitions")])
        case = sop.start("content-review", {"title": "...", "origin": "original"}, actor="li.na").case

Heavy modules load on first use, so that importing `engine` stays cheap for the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sopflow.engine.errors import (
    AuditBroken,
    ConfigurationError,
    Conflict,
    DatabaseUnavailable,
    DefinitionError,
    GuardRefused,
    InvalidData,
    NotAvailable,
    NotFound,
    NotPermitted,
    OutcomeUnknown,
    Problem,
    SopflowError,
    StrandedCases,
    UsageError,
)

if TYPE_CHECKING:
    from sopflow.engine.audit import AuditRecord
    from sopflow.engine.definition.model import Definition, Org
    from sopflow.engine.runtime import Case, Engine, Option, Result
    from sopflow.engine.verify import VerifyReport

__all__ = [
    "AuditBroken",
    "AuditRecord",
    "Case",
    "ConfigurationError",
    "Conflict",
    "DatabaseUnavailable",
    "Definition",
    "DefinitionError",
    "Engine",
    "GuardRefused",
    "InvalidData",
    "NotAvailable",
    "NotFound",
    "NotPermitted",
    "Option",
    "Org",
    "OutcomeUnknown",
    "Problem",
    "Result",
    "SopflowError",
    "StrandedCases",
    "UsageError",
    "VerifyReport",
]

_LAZY = {
    "Engine": "sopflow.engine.runtime",
    "Case": "sopflow.engine.runtime",
    "Option": "sopflow.engine.runtime",
    "Result": "sopflow.engine.runtime",
    "VerifyReport": "sopflow.engine.verify",
    "AuditRecord": "sopflow.engine.audit",
    "Definition": "sopflow.engine.definition.model",
    "Org": "sopflow.engine.definition.model",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sopflow.engine' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module), name)
