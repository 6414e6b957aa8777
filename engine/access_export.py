"""An export as the permission matrix allows it: only the cases the reader may export (filtered in SQL),
desensitised as a whole when any of their export grants is `all_desensitised` (with the deployment's
privacy key, read from SOPFLOW_PRIVACY_KEY_FILE when none is given), and recorded in the access log
(who, what, when, how many cases), whoever exports, the operator included."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, BinaryIO

from sopflow.engine import access

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
    report = write(
        engine, out, fmt, definition=definition, since=since, until=until, desensitiser=d, reader=reader,
        progress=progress, scope=found,
    )  # fmt: skip
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
