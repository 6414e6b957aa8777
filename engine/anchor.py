"""Anchors: keyed snapshots of the audit trail's heads, meant to be kept outside the database.

The hash chains make an edited record visible, but whoever can write the database can also recompute
every hash after the edit, or delete a whole case. An anchor remembers, outside the database, what the
trail was at a moment: every case's last sequence number and hash, one Merkle root over them, the hash of
every deployed definition and org. It is canonical JSON with an HMAC-SHA-256 over it, keyed by a secret
that never enters the database (`SOPFLOW_ANCHOR_KEY_FILE`), so nobody who holds only the database can
write a matching one. Each anchor names the digest of the one before it, so a series kept in a folder
shows a missing, replaced or reordered anchor too.

`audit verify --anchor FILE` then proves the trail was only appended to since: a deleted case, a cut
tail, or a record rewritten with every later hash recomputed no longer matches the anchored head.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sopflow.engine.audit import GENESIS, canonical_json, iso
from sopflow.engine.errors import AuditBroken, ConfigurationError, SopflowError, UsageError
from sopflow.engine.keyfile import read_key_file
from sopflow.engine.store.access import head as access_head
from sopflow.engine.verify import VerifyFinding
from sopflow.engine.verify_registry import log_digest

if TYPE_CHECKING:
    from sopflow.engine.runtime import Engine

FORMAT = "sopflow-anchor/1"
KEY_ENV = "SOPFLOW_ANCHOR_KEY_FILE"
MIN_KEY_BYTES = 32
KEY_HINT = (
    f"make one with `head -c 32 /dev/urandom | base64 > anchor.key`, keep it away from the database and "
    f"its backups, and name it with --key-file or {KEY_ENV}"
)
NAME_PATTERN = "anchor-{number:06d}.json"
MAX_ANCHOR_BYTES = 512 * 1024 * 1024
"""An anchor holds ~80 bytes per case (some 6 million cases here): this bounds what is read."""

log = logging.getLogger("sopflow.anchor")

Head = tuple[int, int, str]
"""(case id, seq, hash) of a case's last audit record."""


@dataclass(frozen=True, slots=True)
class Anchor:
    """One anchor document. `label` says where it was read from, for messages; it is not signed."""

    number: int
    previous: str
    """The digest of the anchor before it in its series (GENESIS for the first)."""
    created_at: str
    cases: tuple[Head, ...]
    merkle_root: str
    definitions: Mapping[str, str]
    """`id@version` → content hash of every deployed definition."""
    orgs: tuple[str, ...]
    """The content hash of every org deployment, oldest first."""
    key_id: str
    delegations: tuple[int, str] | None = None
    """How many rows the delegation log held, and the digest of them (`verify_registry.log_digest`)."""
    baselines: tuple[int, str] | None = None
    """How many baselines there were and the hash of the newest (their chain's head)."""
    mac: str = ""
    label: str = field(default="", compare=False)
    access_log: tuple[int, str] | None = None
    """The access log's head: its last row's number and hash (None: an anchor written before it had one,
    or an empty log). A chain alone cannot show its newest rows cut off; this can."""
    lifecycle: tuple[int, str] | None = None
    """How many acts the lifecycle log held and the hash of the newest (its chain's head)."""

    def body(self) -> dict[str, Any]:
        """What the MAC covers: every field but `mac` and `label`."""
        return {
            **({} if self.access_log is None else {"access_log": list(self.access_log)}),
            "format": FORMAT,
            "number": self.number,
            "previous": self.previous,
            "created_at": self.created_at,
            "cases": [list(head) for head in self.cases],
            "merkle_root": self.merkle_root,
            "definitions": dict(self.definitions),
            "orgs": list(self.orgs),
            "key_id": self.key_id,
            **({} if self.delegations is None else {"delegations": list(self.delegations)}),
            **({} if self.baselines is None else {"baselines": list(self.baselines)}),
            **({} if self.lifecycle is None else {"lifecycle": list(self.lifecycle)}),
        }

    def text(self) -> str:
        """The document as written: canonical JSON, one line."""
        return canonical_json({**self.body(), "mac": self.mac}) + "\n"

    @property
    def digest(self) -> str:
        """What the next anchor of the series names as its `previous`."""
        return hashlib.sha256(self.text().encode("utf-8")).hexdigest()


# -- the key ----------------------------------------------------------------------------------------


def load_key(path: str | Path | None = None) -> bytes:
    """The anchor key from `path`, else from the file `SOPFLOW_ANCHOR_KEY_FILE` names. A final line break
    is not part of it (a key written by `echo` or `base64` ends with one); the file, read as bytes, must
    hold at least MIN_KEY_BYTES, so random bytes straight from /dev/urandom do as well."""
    chosen = path or os.environ.get(KEY_ENV)
    if not chosen:
        raise ConfigurationError("no anchor key is given", hint=KEY_HINT)
    return read_key_file("the anchor key", chosen, minimum=MIN_KEY_BYTES, hint=KEY_HINT)


def key_id(key: bytes) -> str:
    """A name for a key that does not reveal it: says which key signed an anchor."""
    return hmac.new(key, b"sopflow anchor key id", hashlib.sha256).hexdigest()[:16]


def _mac(key: bytes, body: Mapping[str, Any]) -> str:
    return hmac.new(key, canonical_json(dict(body)).encode("utf-8"), hashlib.sha256).hexdigest()


# -- the Merkle root --------------------------------------------------------------------------------


def merkle_root(heads: Sequence[Head]) -> str:
    """The root of a Merkle tree over the heads in order (RFC 6962's leaf and node prefixes, an odd node
    carried up): one value that a transparency log or a printed report can hold for all of them."""
    level = [hashlib.sha256(b"\x00" + canonical_json(list(h)).encode("utf-8")).digest() for h in heads]
    if not level:
        return hashlib.sha256(b"").hexdigest()
    while len(level) > 1:
        pairs = [level[i : i + 2] for i in range(0, len(level), 2)]
        level = [hashlib.sha256(b"\x01" + p[0] + p[1]).digest() if len(p) == 2 else p[0] for p in pairs]
    return level[0].hex()


# -- writing ----------------------------------------------------------------------------------------


def make(
    engine: Engine, key: bytes, *, previous: Anchor | None = None, now: datetime | None = None
) -> Anchor:
    """An anchor of the trail as it is now, chained onto `previous` (the first of a series without)."""
    from sopflow.engine.insight.baseline import head as baseline_head
    from sopflow.engine.lifecycle.chain import head as lifecycle_head

    store = engine.store
    heads = tuple(store.audit_heads())
    definitions = {f"{r.definition_id}@{r.version}": r.content_hash for r in store.definitions()}
    orgs = tuple(row.content_hash for _id, row in store.org_history())
    log = store.delegation_log()
    anchor = Anchor(
        number=1 if previous is None else previous.number + 1,
        previous=GENESIS if previous is None else previous.digest,
        created_at=iso(now or engine.clock()),
        cases=heads,
        access_log=access_head(store),
        merkle_root=merkle_root(heads),
        definitions=definitions,
        orgs=orgs,
        key_id=key_id(key),
        delegations=(len(log), log_digest(log)),
        baselines=baseline_head(store),
        lifecycle=lifecycle_head(store),
    )
    return replace(anchor, mac=_mac(key, anchor.body()))


def write(anchor: Anchor, path: Path) -> None:
    """Write `anchor` to a new file (never over an existing one), whole or not at all."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(anchor.text(), encoding="utf-8")
        os.link(temporary, path)  # fails if `path` exists: an anchor is never overwritten
    except FileExistsError:
        raise UsageError(
            f"`{path}` exists already; an anchor is never overwritten", hint="choose a new file name"
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot write the anchor `{path}`: {exc.strerror or exc}") from None
    finally:
        temporary.unlink(missing_ok=True)


def write_next(engine: Engine, folder: Path, key: bytes, now: datetime | None = None) -> tuple[Anchor, Path]:
    """Write the next anchor of the series in `folder`, chained onto its newest one (which must be
    signed with `key`)."""
    if not folder.is_dir():
        raise UsageError(f"`{folder}` is not a folder", hint="create it, or give an existing one")
    series = _files(folder)
    previous = read(series[-1], key) if series else None
    anchor = make(engine, key, previous=previous, now=now)
    path = folder / NAME_PATTERN.format(number=anchor.number)
    write(anchor, path)
    return anchor, path


# -- reading ----------------------------------------------------------------------------------------


def parse(text: str, key: bytes, label: str) -> Anchor:
    """The anchor in `text`, if `key` signed it: a wrong key or any edit is refused (AuditBroken)."""
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"its format is not {FORMAT}")
        anchor = Anchor(
            number=int(doc["number"]),
            previous=str(doc["previous"]),
            created_at=str(doc["created_at"]),
            cases=tuple((int(c), int(s), str(h)) for c, s, h in doc["cases"]),
            access_log=None
            if "access_log" not in doc
            else (int(doc["access_log"][0]), str(doc["access_log"][1])),
            merkle_root=str(doc["merkle_root"]),
            definitions={str(k): str(v) for k, v in dict(doc["definitions"]).items()},
            orgs=tuple(str(h) for h in doc["orgs"]),
            key_id=str(doc["key_id"]),
            delegations=None
            if "delegations" not in doc
            else (int(doc["delegations"][0]), str(doc["delegations"][1])),
            baselines=None
            if "baselines" not in doc
            else (int(doc["baselines"][0]), str(doc["baselines"][1])),
            lifecycle=None
            if "lifecycle" not in doc
            else (int(doc["lifecycle"][0]), str(doc["lifecycle"][1])),
            mac=str(doc["mac"]),
            label=label,
        )
    except (ValueError, KeyError, TypeError, RecursionError) as exc:  # RecursionError: nesting too deep
        raise UsageError(
            f"{label} is not a sopflow anchor: {exc}", hint="give a file that `sopflow audit anchor` wrote"
        ) from None
    if anchor.key_id != key_id(key):
        raise AuditBroken(
            f"{label} was not signed with this key (it names key {anchor.key_id}, this key is "
            f"{key_id(key)}): it is forged, or the key is not the one that wrote it",
            hint="verify with the key that wrote the anchors; never trust an anchor another key signed",
        )
    if not hmac.compare_digest(anchor.mac, _mac(key, anchor.body())):
        raise AuditBroken(
            f"{label} does not match its signature: it was edited or forged",
            hint="take the anchor from where it is kept (its write-once copy), not from an editable copy",
        )
    if anchor.merkle_root != merkle_root(anchor.cases):
        raise AuditBroken(f"{label}: its Merkle root is not the root of its heads")
    return anchor


def read(path: Path, key: bytes) -> Anchor:
    label = f"anchor `{path}`"
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_ANCHOR_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {label}: {exc.strerror or exc}") from None
    if len(raw) > MAX_ANCHOR_BYTES:
        raise UsageError(f"{label} is larger than {MAX_ANCHOR_BYTES} bytes: it is not an anchor")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{label} is not UTF-8 text: it is not an anchor") from None
    return parse(text, key, label)


def _files(folder: Path) -> list[Path]:
    """The anchor files of a folder, by number."""
    return sorted(folder.glob("anchor-*.json"))


def read_series(folder: Path, key: bytes) -> tuple[list[Anchor], list[VerifyFinding]]:
    """Every anchor in `folder` (each must be signed with `key`, or the whole series is refused) and
    what is wrong with the series: a missing number, an anchor that does not chain onto the one before,
    a later anchor that does not extend an earlier one."""
    if not folder.is_dir():
        raise UsageError(f"`{folder}` is not a folder", hint="give the folder the worker writes anchors to")
    anchors = sorted((read(p, key) for p in _files(folder)), key=lambda a: a.number)
    if not anchors:
        raise UsageError(
            f"`{folder}` holds no anchor (anchor-*.json)", hint="write one: sopflow audit anchor"
        )
    return anchors, series_findings(anchors)


def series_findings(anchors: Sequence[Anchor]) -> list[VerifyFinding]:
    """What is wrong with a series of anchors sorted by number (see `read_series`)."""
    found: list[VerifyFinding] = []
    for earlier, later in itertools.pairwise(anchors):
        subject = f"anchor {later.number}"
        if later.number == earlier.number:
            found.append(
                VerifyFinding(None, None, f"{earlier.label} and {later.label} share a number", subject)
            )
            continue
        if later.number != earlier.number + 1:
            missing = f"{earlier.number + 1}" + (
                f" to {later.number - 1}" if later.number - 1 > earlier.number + 1 else ""
            )
            found.append(
                VerifyFinding(None, None, f"anchor {missing} is missing from the series (removed)", subject)
            )
        elif later.previous != earlier.digest:
            found.append(
                VerifyFinding(
                    None,
                    None,
                    f"it does not chain onto anchor {earlier.number}: one of them was replaced",
                    subject,
                )
            )
        if later.created_at < earlier.created_at:
            found.append(VerifyFinding(None, None, f"it is older than anchor {earlier.number}", subject))
        found += _extends(earlier, later)
    return found


def _extends(earlier: Anchor, later: Anchor) -> list[VerifyFinding]:
    """Whether `later` holds everything `earlier` did, only appended to."""
    found: list[VerifyFinding] = []
    heads = {case_id: (seq, digest) for case_id, seq, digest in later.cases}
    for case_id, seq, digest in earlier.cases:
        now = heads.get(case_id)
        if now is None:
            problem = f"anchor {earlier.number} holds it, anchor {later.number} does not (it was deleted)"
        elif now[0] < seq:
            problem = f"anchor {earlier.number} holds {seq} records, anchor {later.number} only {now[0]}"
        elif now[0] == seq and now[1] != digest:
            problem = f"anchors {earlier.number} and {later.number} hold different hashes for it"
        else:
            continue
        found.append(VerifyFinding(case_id, seq, problem))
    if earlier.access_log and later.access_log and later.access_log[0] < earlier.access_log[0]:
        found.append(
            VerifyFinding(
                None, None, f"anchor {later.number} holds fewer rows than anchor {earlier.number} did",
                "access log",
            )
        )  # fmt: skip
    for key, digest in earlier.definitions.items():
        if later.definitions.get(key) != digest:
            found.append(
                VerifyFinding(
                    None, None, f"anchor {later.number} does not hold it as anchor {earlier.number} did",
                    f"definition {key}",
                )
            )  # fmt: skip
    if earlier.delegations and later.delegations and later.delegations[0] < earlier.delegations[0]:
        found.append(
            VerifyFinding(
                None,
                None,
                f"anchor {later.number} holds fewer delegation rows than anchor {earlier.number} did",
                "delegations",
            )
        )
    if earlier.baselines and later.baselines and later.baselines[0] < earlier.baselines[0]:
        found.append(
            VerifyFinding(
                None, None, f"anchor {later.number} holds fewer baselines than anchor {earlier.number} did",
                "baselines",
            )
        )  # fmt: skip
    if earlier.lifecycle and later.lifecycle and later.lifecycle[0] < earlier.lifecycle[0]:
        found.append(
            VerifyFinding(
                None, None,
                f"anchor {later.number} holds fewer lifecycle acts than anchor {earlier.number} did",
                "lifecycle log",
            )
        )  # fmt: skip
    if later.orgs[: len(earlier.orgs)] != earlier.orgs:
        found.append(
            VerifyFinding(
                None, None, f"anchor {later.number} does not extend anchor {earlier.number}'s orgs", "orgs"
            )
        )
    return found


# -- on a schedule ----------------------------------------------------------------------------------


class AnchorSchedule:
    """Writes the next anchor of a folder's series now and then every `every` until stopped: what
    `sopflow worker --anchor-dir DIR` runs beside the timers. A failure is logged and tried again at
    the next turn; it never stops the worker."""

    def __init__(self, engine: Engine, folder: Path, key: bytes, every: timedelta) -> None:
        if every <= timedelta(0):
            raise UsageError("the anchor interval must be positive", hint="e.g. --anchor-every 1h")
        if not folder.is_dir():
            raise UsageError(f"`{folder}` is not a folder", hint="create it, or give an existing one")
        self.engine = engine
        self.folder = folder
        self.key = key
        self.every = every
        self.written: list[Path] = []

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                _anchor, path = write_next(self.engine, self.folder, self.key)
                self.written.append(path)
                log.info("anchor written to %s", path)
            except SopflowError as exc:
                log.warning("no anchor was written: %s", exc)
            stop.wait(self.every.total_seconds())
