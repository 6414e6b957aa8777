"""Data classification and desensitisation: which fields of a case are personal, and what an export keeps
of them.

A definition marks a field of its data schema (or of an event's payload schema) with `x-sensitive: CLASS`:

- `address`: kept as its province only (the 34 provincial-level divisions of `engine.provinces`, by the
  name the address begins with, in Chinese or English); an address naming none becomes `unknown`;
- `age`: kept as a band (`AGE_BANDS`); a birth date (YYYY-MM-DD) is first turned into the age it gives on
  the day of the export;
- `id`, `phone`, `name`: replaced by a token, HMAC-SHA-256 keyed with the deployment's privacy key, so the
  same value gives the same token in every export made with that key (analysts can still join), while
  nobody without the key can find the value by hashing every candidate (every phone number is only ~10^10
  candidates);
- `free_text`: dropped.

The key is a file of at least 32 random bytes outside the database (`SOPFLOW_PRIVACY_KEY_FILE`); a token
says which key made it only through `key_id` (recorded with each export), never the key itself.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from sopflow.engine.errors import ConfigurationError
from sopflow.engine.keyfile import read_key_file
from sopflow.engine.provinces import PROVINCES

KEYWORD = "x-sensitive"
CLASSES = ("address", "age", "id", "phone", "name", "free_text")
KEY_ENV = "SOPFLOW_PRIVACY_KEY_FILE"
MIN_KEY_BYTES = 32
KEY_HINT = (
    "make one with `head -c 32 /dev/urandom | base64 > privacy.key`, keep it outside the database and its "
    f"backups, and name it with --key-file or {KEY_ENV}"
)
UNKNOWN = "unknown"
AGE_BANDS: tuple[tuple[int, int | None, str], ...] = (
    (0, 17, "0-17"),
    (18, 24, "18-24"),
    (25, 34, "25-34"),
    (35, 44, "35-44"),
    (45, 54, "45-54"),
    (55, 64, "55-64"),
    (65, None, "65+"),
)
"""(lowest, highest or None, label): the bands an age is reported in."""
PERSON = "person"
"""The class of a person's user id (who took a step) in a desensitised export."""

_PREFIXES = ("中华人民共和国", "中国", "People's Republic of China", "PRC", "China")
_PERSONAL_WORDS: dict[str, str] = {
    "phone": "phone",
    "mobile": "phone",
    "tel": "phone",
    "telephone": "phone",
    "cellphone": "phone",
    "id_number": "id",
    "id_card": "id",
    "idcard": "id",
    "identity": "id",
    "passport": "id",
    "email": "id",
    "address": "address",
    "addr": "address",
    "age": "age",
    "birthday": "age",
    "birthdate": "age",
    "birth_date": "age",
    "dob": "age",
    "mail": "id",
    "wechat": "id",
    "weixin": "id",
    "qq": "id",
    "contact": "name",
    "contacts": "name",
}
"""Words in a field's name (between underscores) that make it look personal, and the class it likely is:
a bare `contact` (`product_contact`) is a person to reach, a name or a number, so at least a token."""
_PERSONAL_TEXT: dict[str, str] = {
    "联系电话": "phone",
    "联系方式": "phone",
    "电话": "phone",
    "手机": "phone",
    "联系人": "name",
    "姓名": "name",
    "身份证": "id",
    "证件号": "id",
    "微信": "id",
    "邮箱": "id",
    "住址": "address",
    "地址": "address",
    "年龄": "age",
    "生日": "age",
    "出生": "age",
}
"""Chinese words anywhere in a field's name (`联系人`, `客户联系方式`), and the class each likely is."""
_PERSON_NAMES = frozenset(
    {"contact", "customer", "applicant", "user", "person", "employee", "patient", "member", "real", "full",
     "legal", "student", "client", "family", "given", "last", "first", "surname", "nick"}
)  # fmt: skip
"""A field `WORD_name` with one of these words names a person (`project_name` does not)."""


def looks_personal(name: str) -> str | None:
    """The class a field named `name` probably holds, when it looks personal; else None."""
    lowered = name.lower()
    for text, cls in _PERSONAL_TEXT.items():
        if text in name:
            return cls
    for word, cls in _PERSONAL_WORDS.items():
        if re.search(rf"(^|_){re.escape(word)}($|_)", lowered):
            return cls
    parts = lowered.split("_")
    if lowered in ("realname", "fullname", "surname") or (
        len(parts) >= 2 and parts[-1] == "name" and parts[-2] in _PERSON_NAMES
    ):
        return "name"
    return None


# -- the rules --------------------------------------------------------------------------------------


def province(address: str) -> str:
    """The official name of the province an address begins with, or `unknown`."""
    text = unicodedata.normalize("NFKC", address).strip()
    for prefix in _PREFIXES:
        if text.lower().startswith(prefix.lower()):
            text = text[len(prefix) :].lstrip(" ,，")
            break
    lowered = text.lower()
    for _code, official, _names in PROVINCES:
        if text.startswith(official):
            return official
    for _code, official, names in PROVINCES:
        for name in names:
            if name.isascii():
                if re.search(rf"\b{re.escape(name.lower())}\b", lowered):
                    return official
            elif text.startswith(name):
                return official
    return UNKNOWN


def age_band(value: Any, today: date) -> str:
    """The band of an age (a number, or a birth date YYYY-MM-DD as of `today`), or `unknown`."""
    age: float | None = None
    if isinstance(value, bool):
        age = None
    elif isinstance(value, int | float):
        age = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d{1,3}", text):
            age = float(text)
        else:
            try:
                born = date.fromisoformat(text[:10])
            except ValueError:
                born = None
            if born is not None:
                age = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
    if age is None or not 0 <= age < 150:
        return UNKNOWN
    for low, high, label in AGE_BANDS:
        if age >= low and (high is None or age < high + 1):
            return label
    return UNKNOWN


def normalised(cls: str, value: Any) -> str:
    """The form of a value that is hashed: the same person written differently gives the same token."""
    text = unicodedata.normalize("NFKC", value if isinstance(value, str) else str(value)).strip()
    if cls == "phone":
        digits = re.sub(r"\D", "", text)
        for country in ("0086", "86"):
            if digits.startswith(country) and len(digits) - len(country) == 11:
                digits = digits[len(country) :]
        return digits
    if cls == "id":
        return re.sub(r"[\s-]", "", text).upper()
    return re.sub(r"\s+", " ", text)


def token(key: bytes, cls: str, value: Any) -> str:
    """HMAC-SHA-256 of the class and the normalised value under `key`, in hex."""
    message = f"{cls}\x00{normalised(cls, value)}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def key_id(key: bytes) -> str:
    """A name for the key that does not reveal it: two exports with the same key id have comparable tokens."""
    return hmac.new(key, b"sopflow privacy key id", hashlib.sha256).hexdigest()[:16]


def load_key(path: str | Path | None = None) -> bytes:
    """The privacy key from `path`, else from the file SOPFLOW_PRIVACY_KEY_FILE names (a final line break
    is not part of it)."""
    chosen = path or os.environ.get(KEY_ENV)
    if not chosen:
        raise ConfigurationError("no privacy key is given, so nothing can be desensitised", hint=KEY_HINT)
    return read_key_file("the privacy key", chosen, minimum=MIN_KEY_BYTES, hint=KEY_HINT)


# -- marks and data ---------------------------------------------------------------------------------

Marks = Mapping[str, Any]
"""Field name → its class (a str), or the marks of its own fields (a Marks); `[]` for a list's items."""
ITEMS = "[]"


def marks_of(schema: Any) -> dict[str, Any]:
    """The classes a JSON Schema marks, by field (see `Marks`); unmarked fields are left out."""
    found: dict[str, Any] = {}
    if not isinstance(schema, Mapping):
        return found
    for name, sub in (schema.get("properties") or {}).items():
        if not isinstance(sub, Mapping):
            continue
        cls = sub.get(KEYWORD)
        if isinstance(cls, str):
            found[name] = cls
            continue
        inner = marks_of(sub)
        items = sub.get("items")
        if isinstance(items, Mapping):
            if isinstance(items.get(KEYWORD), str):
                inner[ITEMS] = items[KEYWORD]
            elif item_marks := marks_of(items):
                inner[ITEMS] = item_marks
        if inner:
            found[name] = inner
    return found


DROP = object()
"""What `Desensitiser.value` returns for a value that is left out (free text)."""


@dataclass
class Desensitiser:
    """Applies the rules with one key on one day (for ages given as birth dates)."""

    key: bytes
    today: date
    _people: dict[str, str] = field(default_factory=dict)

    @property
    def key_id(self) -> str:
        return key_id(self.key)

    def value(self, cls: str, value: Any) -> Any:
        if value is None:
            return None
        if cls == "free_text":
            return DROP
        if cls == "address":
            return province(value) if isinstance(value, str) else UNKNOWN
        if cls == "age":
            return age_band(value, self.today)
        return token(self.key, cls, value)

    def data(self, marks: Marks, data: Any) -> Any:
        """`data` with every marked field desensitised (lists and nested objects too)."""
        if not marks or not isinstance(data, Mapping):
            return data
        out: dict[str, Any] = {}
        for name, value in data.items():
            mark = marks.get(name)
            kept = value if mark is None else self._apply(mark, value)
            if kept is not DROP:
                out[name] = kept
        return out

    def _apply(self, mark: Any, value: Any) -> Any:
        if isinstance(mark, str):
            return self.value(mark, value)
        if isinstance(value, list) and ITEMS in mark:
            items = [self._apply(mark[ITEMS], v) for v in value]
            return [v for v in items if v is not DROP]
        return self.data(mark, value)

    def person(self, user_id: str | None) -> str | None:
        """A person's user id as a token (who took a step), the same across exports with this key."""
        if user_id is None or user_id.startswith("$"):
            return user_id  # `$system` and the like name no person
        cached = self._people.get(user_id)
        if cached is None:
            cached = self._people[user_id] = token(self.key, PERSON, user_id)
        return cached
