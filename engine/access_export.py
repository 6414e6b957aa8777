"""An export as the permission matrix allows it: only the cases the reader may export (filtered in SQL),
desensitised as a whole when any of their export grants is `all_desensitised` (with the deployment's
privacy key, read from SOPFLOW_PRIVACY_KEY_FILE when none is given), and recorded in the access log
(who, what, when, how many cases), whoever exports, the operator included."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, BinaryIO

from sopflow.engine import access
from sopflow.engine.errors import ExportStopped

if TYPE_CHECKING:
    from sopflow.engine.export import ExportReport
    from sopflow.engine.runtime import Engine


def export(
    engine: Engine,
    out: BinaryIO,
    fmt: str,
    *,
    definition: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    key: bytes | None = None,
    reader: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ExportReport:
    from sopflow.engine.export import export as write
    from sopflow.engine.privacy import Desensitiser, load_key

    found = access.scope(engine, reader, "export")
    target = " ".join(
        f"{name} {value}"
        for name, value in (("definition", definition), ("since", since), ("until", until))
        if value is not None
    )
    target = f"{fmt} export" + (f" of {target}" if target else "")
    if found is not None and not found.parts:
        assert reader is not None
        raise access.refused(
            engine,
            access.AccessDenied(
                f"{reader} may not export cases: the permission matrix does not grant it to their roles",
                reader,
                "export",
                target,
                hint="ask an administrator, or the owner of the org file, for the grant",
            ),
        )
    if found is not None and any(p.desensitised for p in found.parts) and key is None:
        key = load_key()
    d = Desensitiser(key, engine.clock().date()) if key is not None else None
    delivered = [0]

    def counted(done: int, total: int) -> None:
        delivered[0] = done
        if progress is not None:
            progress(done, total)

    try:
        report = write(
            engine, out, fmt, definition=definition, since=since, until=until, desensitiser=d,
            reader=reader, progress=counted, scope=found,
        )  # fmt: skip
    except BaseException as exc:
        # Cases may have left already (a reader that stopped early, an interrupt): recorded all the same,
        # with the cases handed to the output.
        if delivered[0] or isinstance(exc, OSError):
            detail = {"format": fmt, "desensitised": d is not None, "key_id": d.key_id if d else None}
            access.exported(engine, reader, target, delivered[0], {**detail, "stopped": type(exc).__name__})
        if isinstance(exc, BrokenPipeError | ConnectionResetError):
            raise ExportStopped(
                f"the export stopped after {delivered[0]} case(s): the reader closed the output before "
                "the end; what was handed to it is recorded in the access log",
                hint="read the whole output, or export to a file with --out",
            ) from None
        raise
    access.exported(
        engine,
        reader,
        target,
        report.cases,
        {
            "format": fmt,
            "events": report.events,
            "desensitised": report.desensitised,
            "key_id": report.key_id,
        },
    )
    return report
