"""One error hierarchy for sopflow, each error with the exit code the CLI returns for it.

Exit codes: 0 done; 1 refused (a definition with errors, not found, not permitted, guard refused,
invalid data, conflict, a broken audit chain); 2 a usage or configuration problem (bad arguments,
an unreadable path, a database that cannot be opened); 4 the outcome is unknown (the connection broke
while a write was committing: it may or may not be stored; repeat it with its idempotency key).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNKNOWN = 4

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding about a definition, with the place in the file it concerns."""

    file: str
    line: int
    col: int
    code: str
    message: str
    hint: str | None = None
    severity: Severity = "error"

    def render(self) -> str:
        text = f"{self.file}:{self.line}:{self.col}: {self.severity}[{self.code}]: {self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
        }


class SopflowError(Exception):
    """Root of every error sopflow raises on purpose. `str(err)` is the message for the user."""

    exit_code: int = EXIT_REFUSED
    kind: str = "error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"

    def as_dict(self) -> dict[str, Any]:
        return {"error": self.kind, "message": self.message, "hint": self.hint}


class UsageError(SopflowError):
    """The command was called wrongly: a missing argument, an unreadable path, bad JSON input."""

    exit_code = EXIT_USAGE
    kind = "usage"


class ConfigurationError(SopflowError):
    """The environment is wrong: a database that cannot be opened or is not upgraded, a missing org."""

    exit_code = EXIT_USAGE
    kind = "configuration"


class DatabaseUnavailable(ConfigurationError):
    """The database cannot serve now but may later: the server is down or restarting, the connection
    was lost, SQLite's write lock is held past the busy timeout, the disk is full, a statement ran
    past its timeout. Nothing of the command was written; trying again later may succeed, and a
    worker does so by itself. (A ConfigurationError that is not this one needs a person.)"""

    kind = "database-unavailable"


class DefinitionError(SopflowError):
    """One or more definitions are invalid; `problems` lists every finding, errors and warnings."""

    kind = "definition"

    def __init__(self, problems: Iterable[Problem], message: str | None = None) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        errors = [p for p in self.problems if p.severity == "error"]
        if message is None:
            first = errors[0].render() if errors else "no errors"
            message = first if len(errors) == 1 else f"{len(errors)} errors, the first: {first}"
        super().__init__(message, hint="run `sopflow validate` on the file to see every problem")

    def as_dict(self) -> dict[str, Any]:
        out = super().as_dict()
        out["problems"] = [p.as_dict() for p in self.problems]
        return out


class NotFound(SopflowError):
    """A case, definition, user or event that does not exist."""

    kind = "not-found"


class NotPermitted(SopflowError):
    """The acting user holds none of the roles the step allows (the denial is audited)."""

    kind = "not-permitted"


class GuardRefused(SopflowError):
    """The step's guard expression is false for this case (the refusal is audited)."""

    kind = "guard-refused"


class InvalidData(SopflowError):
    """Start data or an event's payload does not match the definition's schema."""

    kind = "invalid-data"

    def __init__(self, message: str, *, hint: str | None = None, errors: Iterable[str] = ()) -> None:
        super().__init__(message, hint=hint)
        self.errors = tuple(errors)

    def as_dict(self) -> dict[str, Any]:
        out = super().as_dict()
        out["errors"] = list(self.errors)
        return out


class Conflict(SopflowError):
    """Someone else changed the case first (a stale version), or a definition version clashes."""

    kind = "conflict"


class StrandedCases(Conflict):
    """A new org would leave running cases pointing at people or roles it no longer has; `stranded` says,
    per case, what each would lose. Nothing was deployed."""

    kind = "stranded-cases"

    def __init__(self, message: str, stranded: Iterable[tuple[int, str]], hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.stranded: tuple[tuple[int, str], ...] = tuple(stranded)

    def as_dict(self) -> dict[str, Any]:
        out = super().as_dict()
        out["cases"] = [{"case": case, "problem": problem} for case, problem in self.stranded]
        return out


class AuditBroken(SopflowError):
    """`audit verify` found a record whose hash, order or replayed state is wrong."""

    kind = "audit-broken"


class NotAvailable(SopflowError):
    """The event does not exist in the case's current state, or the case is closed (nothing is written)."""

    kind = "not-available"


class ExportStopped(SopflowError):
    """The reader of an export went away before its end (a closed pipe); the export is in the access log
    with the cases handed to it."""

    kind = "export-stopped"


class OutcomeUnknown(SopflowError):
    """The connection to the database broke while a write was committing: the server may have stored it
    or not, and nobody can tell from here. `key` is the write's idempotency key: repeating the write with
    it applies it at most once (or answers that it was already done); repeating it without would apply
    it twice if the first did commit."""

    exit_code = EXIT_UNKNOWN
    kind = "outcome-unknown"

    def __init__(self, message: str, *, hint: str | None = None, key: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.key = key

    def of(self, what: str, key: str) -> OutcomeUnknown:
        """This failure, said of `what` was committing under the idempotency `key`."""
        return OutcomeUnknown(
            f"{what} may or may not have been stored: {self.message}",
            hint=f"repeat it with the same idempotency key, `--key {key}` (key={key!r} in the API): it is "
            "then applied once, or answered as already done; never repeat it without the key",
            key=key,
        )

    def as_dict(self) -> dict[str, Any]:
        out = super().as_dict()
        out["key"] = self.key
        return out
