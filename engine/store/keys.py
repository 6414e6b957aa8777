"""Idempotency keys: what a write claims with its key, what an earlier use of the key recorded, and
whether the two are the same request.

A key names one write request (a start or a fire) across the whole database, as payment APIs treat
theirs: repeating the request with its key returns the first result and writes nothing, but reusing the
key by another person, for another operation, definition, case or event, or with other content is a
`Conflict`. The content is compared by a fingerprint, the SHA-256 of the canonical JSON of everything
the caller sent; it is stored with the key, never in the audit record, whose hashes a key (often a
random default one) must not change.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sopflow.engine.audit import canonical_json
from sopflow.engine.errors import Conflict, UsageError

Operation = Literal["start", "fire"]
MAX_KEY_LENGTH = 200
"""As the `key` column is wide."""


def new_key() -> str:
    """A default key for a write whose caller gave none: random, so that only a retry that repeats it
    matches."""
    return str(uuid.uuid4())


def check_key(key: str) -> str:
    """`key`, if a key may be that: 1 to 200 characters, not only spaces."""
    if not key.strip() or len(key) > MAX_KEY_LENGTH:
        what = "empty" if not key.strip() else f"{len(key)} characters long"
        raise UsageError(
            f"idempotency key `{key[:40]}` is {what}",
            hint=f"use 1 to {MAX_KEY_LENGTH} characters, e.g. your own request id, or leave the key out",
        )
    return key


def fingerprint(content: Mapping[str, Any]) -> str:
    """The SHA-256 (hex) of the canonical JSON of a request's content."""
    return hashlib.sha256(canonical_json(dict(content)).encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyUse:
    """A key as stored: its first use, the record it wrote, and the fingerprint of that request (None for
    keys stored before fingerprints were: those match on actor, operation and target)."""

    key: str
    operation: str
    actor: str
    target: str
    """The definition started, or the event fired."""
    case_id: int
    seq: int
    fingerprint: str | None

    def describe(self) -> str:
        if self.operation == "start":
            return f"{self.actor} started case {self.case_id} of `{self.target}` with it"
        return f"{self.actor} fired `{self.target}` on case {self.case_id} with it"


@dataclass(frozen=True, slots=True)
class KeyClaim:
    """What a start or a fire claims with its key: who, which operation, on what, with which content."""

    key: str
    operation: Operation
    actor: str
    target: str
    fingerprint: str
    case_id: int | None = None
    """The case a fire is on (None for a start)."""

    @classmethod
    def start(
        cls, key: str, actor: str, definition_id: str, version: int | None, data: Mapping[str, Any]
    ) -> KeyClaim:
        content = {"operation": "start", "actor": actor, "definition": definition_id, "version": version}
        return cls(key, "start", actor, definition_id, fingerprint({**content, "data": dict(data)}))

    @classmethod
    def fire(
        cls,
        key: str,
        actor: str,
        case_id: int,
        event: str,
        payload: Mapping[str, Any],
        comment: str | None,
    ) -> KeyClaim:
        content = {"operation": "fire", "actor": actor, "case": case_id, "event": event}
        content.update(payload=dict(payload), comment=comment)
        return cls(key, "fire", actor, event, fingerprint(content), case_id)

    def same_request(self, use: KeyUse) -> bool:
        """Whether `use` was this very request (so its result is this one's)."""
        if use.fingerprint is not None:
            return use.fingerprint == self.fingerprint
        same = (use.operation, use.actor, use.target) == (self.operation, self.actor, self.target)
        return same and (self.case_id is None or use.case_id == self.case_id)

    def conflict(self, use: KeyUse, *, reveal: bool = True) -> KeyConflict:
        """The refusal of reusing `use`'s key for this other request, saying how they differ. Another
        person's use is described only when `reveal` (the engine says so when the person may view that
        case): otherwise the key is only said to be in use, so a guessed key tells nobody who started or
        fired what on a case outside their view."""
        if use.actor != self.actor and not reveal:
            return KeyConflict(
                f"idempotency key `{self.key}` is already in use for another request",
                self,
                use,
                hint="choose another key (or none: one is made for each request)",
            )
        if use.actor != self.actor:
            why = "by another person"
        elif (use.operation, use.target) != (self.operation, self.target) or (
            self.case_id is not None and use.case_id != self.case_id
        ):
            why = "for another request"
        else:
            why = "with other content"
        return KeyConflict(
            f"idempotency key `{self.key}` was already used {why}: {use.describe()}; "
            "a key may only repeat its own request: the same person, operation, case or definition, "
            "event, data, payload and comment",
            self,
            use,
            hint="give a new request a new key (or none: one is made for it)",
        )


class KeyConflict(Conflict):
    """An idempotency key reused for another request: `claim` is the refused one, `use` the first."""

    def __init__(self, message: str, claim: KeyClaim, use: KeyUse, *, hint: str) -> None:
        super().__init__(message, hint=hint)
        self.claim, self.use = claim, use

    @property
    def foreign(self) -> bool:
        """Whether another person used the key first."""
        return self.use.actor != self.claim.actor
