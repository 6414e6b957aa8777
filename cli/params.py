"""What the command line reads, in one place: click parameter types for case numbers, JSON objects, JSON
files, times, `--where` filters and bounded counts, and the check that every argument is text.

Each type refuses bad input with one `UsageError` (exit 2) that names the option or argument and says how
to fix it, before anything is opened or written: NaN, Infinity and numbers beyond a float, lone UTF-16
surrogates, JSON nested deeper than `MAX_JSON_DEPTH`, case numbers beyond the database's 64-bit integers,
times the engine's timers cannot reach. The commands import their types from here and nothing from each
other.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click

MAX_ID = 2**63 - 1
"""The largest case (or delegation, or version) number: the databases' 64-bit integer."""
MAX_JSON_DEPTH = 64
"""JSON nested deeper than this is refused before it is parsed (a case's data is a flat record; Python's
parser would run out of stack near 1,000)."""
MAX_JSON_FILE_BYTES = 16 * 1024 * 1024
"""A --data-file larger than this is refused unread (the engine holds a case's data to 256 KiB anyway)."""
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)
"""Times given on the command line lie between these: timers add days and escalation ladders to a time,
and Python's datetime ends at year 9999."""

_DIGITS = re.compile(r"[0-9]+")
_SURROGATE = re.compile("[\ud800-\udfff]")
_TIME_HINT = "use ISO 8601, e.g. 2026-11-24T14:00:00+08:00 (a time without an offset is UTC)"


def _fail(param: click.Parameter | None, message: str, hint: str) -> NoReturn:
    from sopflow.engine.errors import UsageError

    raise UsageError(f"{name_of(param)}: {message}", hint=hint)


def name_of(param: click.Parameter | None) -> str:
    """How the person typed the parameter: `--after` for an option, CASE for an argument."""
    if param is None:
        return "the value"
    if isinstance(param, click.Option):
        return max(param.opts, key=len)
    return (param.name or "value").upper()


def show(raw: str, limit: int = 40) -> str:
    """A value quoted in a message: cut short when long, control characters and surrogates escaped."""
    from sopflow.cli.render import safe

    cut = raw if len(raw) <= limit else f"{raw[:limit]}… ({len(raw)} characters)"
    text = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", cut)
    return "`" + safe(text) + "`"


def not_text(raw: str) -> str | None:
    """Why `raw` (an argument as Python decoded it) is not text, or None: a byte that is not UTF-8 arrives
    as a lone surrogate (PEP 383), as from a terminal in GBK or Latin-1."""
    found = _SURROGATE.search(raw)
    if found is None:
        return None
    code = ord(found.group())
    if 0xDC80 <= code <= 0xDCFF:
        return f"byte 0x{code - 0xDC00:02x} is not UTF-8"
    return f"it holds U+{code:04X}, half of a UTF-16 surrogate pair"


# -- numbers -----------------------------------------------------------------------------------------


class CaseId(click.ParamType[int]):
    """A case number as `sopflow list` shows it (a leading `#` is allowed): ASCII digits, 1 to MAX_ID."""

    name = "case"

    def __init__(self, what: str = "case number", hint: str = "case numbers are shown by `sopflow list`"):
        self.what = what
        self.hint = hint

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        raw = str(value).strip()
        digits = raw[1:] if raw.startswith("#") else raw
        # Digits only in ASCII: str.isdigit() also takes `²` and `٣`, which int() then refuses.
        if not _DIGITS.fullmatch(digits) or len(digits.lstrip("0")) > len(str(MAX_ID)):
            if _DIGITS.fullmatch(digits):
                _fail(param, f"{show(raw)} is too large for a {self.what}", self.hint)
            _fail(param, f"{show(raw)} is not a {self.what}", self.hint)
        number = int(digits)
        if not 1 <= number <= MAX_ID:
            _fail(param, f"{show(raw)} is out of range for a {self.what} (1 to {MAX_ID})", self.hint)
        return number


CASE = CaseId()
VERSION = CaseId("version", "versions are shown by `sopflow defs list`")
DELEGATION = CaseId("delegation number", "delegation numbers are shown by `sopflow delegations`")


class Count(click.ParamType[int]):
    """A whole number within bounds, e.g. a page size."""

    name = "integer"

    def __init__(self, low: int, high: int, hint: str) -> None:
        self.low = low
        self.high = high
        self.hint = hint

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            raw = str(value).strip()
            sign = raw[:1] if raw[:1] in "+-" else ""
            if not _DIGITS.fullmatch(raw[len(sign) :]) or len(raw) > 20:
                _fail(param, f"{show(raw)} is not a whole number from {self.low} to {self.high}", self.hint)
            number = int(raw)
        if not self.low <= number <= self.high:
            _fail(param, f"{number} is out of range ({self.low} to {self.high})", self.hint)
        return number


LIMIT = Count(1, 10_000, "give --limit 1 to 10000, and page on with --after LAST_CASE_NUMBER")
LEASE = Count(1, 86_400, "give the lease in seconds, 1 to 86400 (a day)")


class Seconds(click.ParamType[float]):
    """A span in seconds within bounds: a finite number (`nan` and `inf` are numbers to Python, not here)."""

    name = "seconds"

    def __init__(self, low: float, high: float) -> None:
        self.low = low
        self.high = high

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        else:
            raw = str(value).strip()
            try:
                number = float(raw) if len(raw) <= 32 else float("nan")
            except ValueError:
                number = float("nan")
            if math.isnan(number) and raw.lower() != "nan":
                _fail(param, f"{show(raw)} is not a number of seconds", self._hint())
        if not self.low <= number <= self.high:  # also false for nan
            _fail(param, f"{number:g} seconds is out of range ({self.low:g} to {self.high:g})", self._hint())
        return number

    def _hint(self) -> str:
        return f"give a number of seconds from {self.low:g} to {self.high:g}, e.g. 1 or 0.5"


IDLE = Seconds(0.01, 3600)
BACKOFF = Seconds(0.5, 3600)


# -- JSON --------------------------------------------------------------------------------------------


class JsonRefused(ValueError):
    """JSON text that sopflow does not take, with why and how to fix it (no hint: a syntax error)."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def json_depth(text: str) -> int:
    """How deeply `text`'s arrays and objects nest (0 when it cannot exceed MAX_JSON_DEPTH), counted
    without parsing (brackets in strings skipped), so that a hostile nesting is refused before the parser
    recurses into it."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return 0  # cannot nest too deep: skip the scan, the usual case
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_JSON_DEPTH:
                    return deepest
        elif ch in "]}":
            depth -= 1
    return deepest


def _constant(name: str) -> Any:
    raise JsonRefused(
        f"{name} is not a JSON number",
        "JSON has no NaN or Infinity: give a number, null, or the word as a string in quotes",
    )


def _float(raw: str) -> float:
    value = float(raw)
    if value in (float("inf"), float("-inf")):
        raise JsonRefused(
            f"{raw[:40]} is beyond the largest number a case can hold (about 1.8e308)",
            "give a smaller number, or the figure as a string in quotes",
        )
    return value


def _no_surrogates(value: Any) -> None:
    if isinstance(value, str):
        why = not_text(value)
        if why is not None:
            raise JsonRefused(
                f"the text {show(value)} is not valid: {why}",
                "write the character itself (UTF-8), or both halves of a \\uD83D\\uDE00 pair",
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            _no_surrogates(key)
            _no_surrogates(item)
    elif isinstance(value, list):
        for item in value:
            _no_surrogates(item)


def parse_json(text: str) -> Any:
    """JSON text to its value, refusing (JsonRefused) what no case can hold: NaN, Infinity, numbers beyond
    a float, lone surrogates, nesting deeper than MAX_JSON_DEPTH, integers of more than 4,300 digits."""
    # A byte-order mark carries no meaning in UTF-8; `--data "$(cat file.json)"` brings one along.
    text = text.removeprefix("\ufeff")
    if json_depth(text) > MAX_JSON_DEPTH:
        raise JsonRefused(
            f"it nests arrays or objects more than {MAX_JSON_DEPTH} deep",
            "flatten the data: a case's data is a record of fields",
        )
    try:
        value = json.loads(text, parse_constant=_constant, parse_float=_float)
    except json.JSONDecodeError as exc:
        raise JsonRefused(f"{exc.msg} at line {exc.lineno} column {exc.colno}", "") from None
    except JsonRefused:
        raise
    except ValueError as exc:  # an integer of more than 4,300 digits
        raise JsonRefused(f"not a usable JSON value: {exc}".split(";")[0], "give a shorter number") from None
    _no_surrogates(value)
    return value


_SHELL_HINT = 'quote it for the shell: --data \'{"field": "value"}\''


class JsonObject(click.ParamType[dict[str, Any]]):
    """A JSON object given on the command line (`--data '{"title": "..."}'`)."""

    name = "json"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dict[str, Any]:
        if isinstance(value, dict):
            return value
        return json_object(str(value), name_of(param), _SHELL_HINT)


def json_object(text: str, where: str, syntax_hint: str) -> dict[str, Any]:
    """`text` as a JSON object, or a UsageError naming `where` with the fix."""
    from sopflow.engine.errors import UsageError

    try:
        value = parse_json(text)
    except JsonRefused as exc:
        # Without a hint of its own, it is a syntax error: the cure is in how it was typed.
        verdict = "is refused" if exc.hint else "is not valid JSON"
        raise UsageError(f"{where} {verdict}: {exc.message}", hint=exc.hint or syntax_hint) from None
    if not isinstance(value, dict):
        raise UsageError(
            f"{where} must be a JSON object, not {_json_kind(value)}",
            hint='give the fields by name: --data \'{"field": "value"}\'',
        )
    return value


def _json_kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "true or false", type(None): "null"}.get(
        type(value), "a number"
    )


class JsonFile(click.ParamType[dict[str, Any]]):
    """A file holding a JSON object (`--data-file payload.json`): UTF-8, a byte-order mark allowed."""

    name = "file"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dict[str, Any]:
        if isinstance(value, dict):
            return value
        where = f"{name_of(param)} {show(str(value), 200)}"
        path = Path(value)
        hint = f"check the path given to {name_of(param)}"
        try:
            if path.is_dir():
                _fail(param, f"{show(str(value), 200)} is a folder, not a file", hint)
            size = path.stat().st_size
            if size > MAX_JSON_FILE_BYTES:
                _fail(param, f"{show(str(value), 200)} holds {size} bytes", "a case holds at most 256 KiB")
            raw = path.read_bytes()
        except OSError as exc:
            _fail(param, f"cannot read {show(str(value), 200)}: {exc.strerror or exc}", hint)
        try:
            # utf-8-sig: editors on Windows save UTF-8 with a byte-order mark, which means nothing here.
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            byte = f"byte 0x{raw[exc.start]:02x} at offset {exc.start}"
            _fail(param, f"{show(str(value), 200)} is not UTF-8 text ({byte})", "save the file as UTF-8")
        return json_object(text, where, 'fix the JSON in the file (a JSON object: {"field": "value"})')


JSON_OBJECT = JsonObject()
JSON_FILE = JsonFile()


def data_of(data: dict[str, Any] | None, data_file: dict[str, Any] | None) -> dict[str, Any]:
    """The one JSON object given by --data or --data-file (neither: empty)."""
    from sopflow.engine.errors import UsageError

    if data is not None and data_file is not None:
        raise UsageError("give --data or --data-file, not both", hint="drop one of them")
    return data if data is not None else data_file if data_file is not None else {}


# -- times -------------------------------------------------------------------------------------------


class Timestamp(click.ParamType[datetime]):
    """A time in ISO 8601 (`2026-11-24T14:00:00+08:00`, `…Z`; without an offset: UTC), from 1970 to
    3000."""

    name = "time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        raw = str(value).strip()
        try:
            moment = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            _fail(param, f"{show(raw)} is not a time", _TIME_HINT)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        try:
            inside = EARLIEST <= moment < LATEST
        except OverflowError:  # an offset that takes it past year 9999
            inside = False
        if not inside:
            _fail(
                param,
                f"{show(raw)} is out of range: sopflow takes times from 1970 to 2999",
                "give a time within that range",
            )
        return moment


TIME = Timestamp()


# -- filters -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Where:
    """One `--where FIELD=VALUE`: a data field equals a value."""

    field: str
    value: Any


_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


class WhereFilter(click.ParamType[Where]):
    """`FIELD=VALUE`: VALUE is JSON (`tier="minor"`, `amount=5000`, `urgent=true`), and a bare word that is
    not JSON is text (`origin=original`)."""

    name = "field=value"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Where:
        if isinstance(value, Where):
            return value
        raw = str(value)
        field, equals, text = raw.partition("=")
        example = "e.g. --where tier=minor_adjustment or --where 'title=\"春季活动\"'"
        if not equals:
            _fail(param, f"{show(raw)} is not FIELD=VALUE", example)
        if not _FIELD.fullmatch(field.strip()):
            _fail(param, f"{show(field)} is not a data field name", f"name a field of the data: {example}")
        try:
            parsed = parse_json(text)
        except JsonRefused as exc:
            if exc.hint:  # JSON that cannot be a value (NaN, 1e999, a lone surrogate): say so
                quoted = json.dumps(text, ensure_ascii=False)
                hint = f"to match it as text, quote it: --where '{field}={quoted}'"
                _fail(param, f"{field}={show(text)}: {exc.message}", hint)
            parsed = text  # not JSON at all: a bare word, matched as text
        return Where(field.strip(), parsed)


WHERE = WhereFilter()
