"""The work of automatic states: a Python handler an embedding application registers, or a webhook.

The worker does it when the state's timer (a timeout due at once) comes due, before the transaction that
records it: the call is outside any transaction, its outcome is then one system step (`automatic_done`
with the answer, or `automatic_failed` with the error) committed with the timer marked fired. A worker
that dies between the call and the commit leaves the timer leased; once the lease runs out another worker
calls again with the same idempotency key (`CASE:SEQ`, the record that entered the state), so the work is
delivered at least once and recorded once: the receiver (or handler) uses the key to do it once.
"""

from __future__ import annotations

import importlib
import json
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from sopflow.engine.definition.model import AUTOMATIC_DONE, AUTOMATIC_FAILED, Automatic
from sopflow.engine.errors import ConfigurationError, UsageError

MAX_ERROR = 1000
"""An error is kept to this many characters in the record (and the data)."""
WEBHOOK_TIMEOUT = 10.0
"""Seconds a webhook may take to answer before the try counts as failed."""


@dataclass(frozen=True, slots=True)
class AutomaticCall:
    """What a handler (or a webhook, as JSON) is given: the case, its state and data, and the key that
    makes a repeated call the same call."""

    case_id: int
    definition: str
    state: str
    data: Mapping[str, Any]
    key: str


Handler = Callable[[AutomaticCall], Mapping[str, Any]]
"""A registered handler: the call in, a JSON object out (`out:` maps its fields into the data); raising
is a failed try."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """The event the worker fires for the work, its payload, and how many tries it took."""

    event: str
    payload: dict[str, Any]
    tries: int


HANDLER_GROUP = "sopflow.handlers"
"""The entry-point group an installed package declares its handlers in: the entry point's name is the
handler's name (`automatic: {handler: NAME}`), its object the function."""


def load_handlers(specs: Sequence[str] = (), *, installed: bool = True) -> dict[str, Handler]:
    """The handlers a worker outside the embedding application registers: those installed packages declare
    in the `sopflow.handlers` entry-point group, then (winning over them) those each `MODULE:FUNCTION` of
    `specs` returns (a function called without arguments that returns {name: handler})."""
    found: dict[str, Handler] = {}
    if installed:
        for point in entry_points(group=HANDLER_GROUP):
            where = f"entry point `{point.name} = {point.value}` of group `{HANDLER_GROUP}`"
            found[point.name] = _handler(_loaded(point.load, where), where)
    named: dict[str, str] = {}
    for spec in specs:
        for name, handler in _registry(spec).items():
            if name in named:
                raise UsageError(
                    f"handler `{name}` is returned by both `{named[name]}` and `{spec}`",
                    hint="give each handler one name, or pass only one of the two to --handlers",
                )
            named[name] = spec
            found[name] = handler
    return found


def _registry(spec: str) -> dict[str, Handler]:
    module, colon, attribute = spec.partition(":")
    if not colon or not module or not attribute:
        raise UsageError(
            f"`{spec}` does not name a registry function",
            hint="write MODULE:FUNCTION, e.g. myapp.sop:handlers",
        )
    where = f"--handlers {spec}"
    loaded = _loaded(lambda: importlib.import_module(module), where)
    function = getattr(loaded, attribute, None)
    if not callable(function):
        raise UsageError(f"module `{module}` has no function `{attribute}`", hint=f"check {where}")
    answer = _loaded(
        function,
        where,
        "the registry function is called without arguments and returns {'NAME': function, ...}; "
        "fix what it raised",
        "call",
    )
    if not isinstance(answer, Mapping) or not all(isinstance(k, str) for k in answer):
        raise UsageError(
            f"`{spec}` returned {type(answer).__name__}, not a mapping of handler names to functions",
            hint="return {'NAME': function, ...}, NAME as the definition's `automatic: {handler: NAME}`",
        )
    return {name: _handler(h, f"handler `{name}` of {where}") for name, h in answer.items()}


def _loaded(
    load: Callable[[], Any],
    where: str,
    hint: str = "install the package that provides it, or put its folder on PYTHONPATH",
    what: str = "load",
) -> Any:
    try:
        return load()
    except (Exception, SystemExit) as exc:
        # SystemExit too: a registry that calls exit() must not end the worker as if it had finished.
        cause = (
            f"it called exit({exc.code!r})" if isinstance(exc, SystemExit) else f"{type(exc).__name__}: {exc}"
        )
        raise ConfigurationError(f"{where} could not be {what}ed: {cause}"[:MAX_ERROR], hint=hint) from None


def _handler(value: Any, where: str) -> Handler:
    if not callable(value):
        raise UsageError(f"{where} is {type(value).__name__}, not a function", hint="name a function")
    handler: Handler = value
    return handler


def key_of(case_id: int, entered_seq: int) -> str:
    """The idempotency key of the work of one entry into an automatic state."""
    return f"{case_id}:{entered_seq}"


class TakenOver(Exception):
    """The worker no longer holds the work (its lease ran out and another worker took the timer over)."""


def perform(
    automatic: Automatic,
    call: AutomaticCall,
    handlers: Mapping[str, Handler],
    sleep: Callable[[float], None] = time.sleep,
    *,
    tried: int = 0,
    last_error: str | None = None,
    note: Callable[[int, str], bool] | None = None,
) -> Outcome:
    """Do the work, retrying a failed try with a short backoff until `automatic.retries + 1` tries are
    made. `tried` tries already failed (kept with the timer by an earlier worker, `last_error` the last
    one's error): only those left are made, none when none are. After each failed try `note(tries so
    far, error)` keeps it; when it answers False the work is another worker's now: TakenOver."""
    tries = automatic.retries + 1
    error = last_error or "every try failed"
    attempt = tried
    while attempt < tries:
        try:
            answer = _once(automatic, call, handlers)
            payload = {mine: answer[theirs] for mine, theirs in automatic.out.items() if theirs in answer}
            _check_json(payload, automatic)
            return Outcome(AUTOMATIC_DONE, payload, attempt + 1)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR]
        attempt += 1
        if note is not None and not note(attempt, error):
            raise TakenOver(f"try {attempt} of {call.key} failed after the work was taken over")
        if attempt < tries:
            sleep(min(0.2 * 2 ** (attempt - tried - 1), 2.0))
    return Outcome(AUTOMATIC_FAILED, {"error": error}, max(tries, tried))


def _check_json(payload: Mapping[str, Any], automatic: Automatic) -> None:
    """Raise (a failed try) when a value the answer gives the data has no JSON form: NaN, an infinity, or
    an object JSON does not know. The record and the data hold JSON; such a value must not reach them."""
    for mine, value in payload.items():
        name = automatic.out.get(mine, mine)
        try:
            json.dumps(value, allow_nan=False)
        except ValueError:
            raise ValueError(f"the answer's `{name}` is not a number JSON can hold") from None
        except TypeError as exc:
            raise TypeError(f"the answer's `{name}` is not JSON: {exc}") from None


def _not_json(constant: str) -> Any:
    raise ValueError(f"the answer holds {constant}, and {constant} is not a number JSON can hold")


def _once(automatic: Automatic, call: AutomaticCall, handlers: Mapping[str, Handler]) -> Mapping[str, Any]:
    if automatic.handler is not None:
        handler = handlers.get(automatic.handler)
        if handler is None:
            raise LookupError(
                f"no handler `{automatic.handler}` is registered (Engine.register_handler) in this worker"
            )
        answer = handler(call)
    else:
        assert automatic.webhook is not None
        answer = _post(automatic.webhook, call)
    if not isinstance(answer, Mapping):
        raise TypeError(f"the answer is not a JSON object but {type(answer).__name__}")
    return answer


def _post(url: str, call: AutomaticCall) -> Any:
    body = json.dumps(
        {"case": call.case_id, "definition": call.definition, "state": call.state, "data": dict(call.data)},
        ensure_ascii=False,
    ).encode("utf-8")
    # The scheme is checked by the definition schema (http or https): no `file:` URL reaches here.
    request = urllib.request.Request(  # noqa: S310
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "Idempotency-Key": call.key},
    )
    with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT) as response:  # noqa: S310
        text = response.read().decode("utf-8")
    # Python's json reads NaN and Infinity, which are no JSON: such an answer is a failed try.
    return json.loads(text, parse_constant=_not_json) if text.strip() else {}
