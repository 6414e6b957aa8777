"""Secret keys read from files kept outside the database (the anchor key, the privacy key): one way to
read them, check their length and report what is wrong with the file."""

from __future__ import annotations

from pathlib import Path

from sopflow.engine.errors import ConfigurationError


def read_key_file(what: str, chosen: str | Path, *, minimum: int, hint: str) -> bytes:
    """The key in the file `chosen`, as bytes without a final line break (a key written by `echo` or
    `base64` ends with one). The file must hold at least `minimum` bytes, so random bytes straight from
    /dev/urandom do as well as text. `what` names the key in messages ("the anchor key")."""
    try:
        raw = Path(chosen).expanduser().read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {what} `{chosen}`: {exc.strerror or exc}", hint=hint) from None
    if len(raw) < minimum:
        raise ConfigurationError(
            f"{what} `{chosen}` holds {len(raw)} bytes; at least {minimum} are needed", hint=hint
        )
    return raw.removesuffix(b"\n").removesuffix(b"\r")
