"""The `sopflow` command: global options, the command groups, and turning errors into exit codes.

Exit codes: 0 done; 1 refused (a definition with errors, not found, not permitted, guard refused,
invalid data, conflict, a broken audit trail); 2 a usage or configuration problem; 3 an internal error
(a bug: please report it; SOPFLOW_DEBUG=1 shows the traceback); 4 the outcome is unknown (the connection
broke while a start or fire was committing; repeat it with the `--key` the message shows).

Only click is imported at start-up; each command imports the engine parts it needs when it runs.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

if TYPE_CHECKING:
    from sopflow.engine.runtime import Engine

EXIT_USAGE = 2
EXIT_INTERNAL = 3
F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Settings:
    """What the global options say, and the engine opened on first use (one per command run)."""

    db: str
    user: str | None
    json: bool
    _engine: Engine | None = field(default=None, repr=False)

    def engine(self) -> Engine:
        if self._engine is None:
            from sopflow.engine.runtime import Engine

            self._engine = Engine(self.db)
        return self._engine

    def actor(self) -> str:
        if not self.user:
            from sopflow.engine.errors import UsageError

            raise UsageError(
                "who is acting? no user was given",
                hint="pass --as USER (before the command) or set SOPFLOW_USER",
            )
        return self.user

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()


def settings() -> Settings:
    obj = click.get_current_context().find_object(Settings)
    assert obj is not None
    return obj


def emit(data: Any) -> None:
    """Print machine-readable output (for --json)."""
    click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))


class SopflowGroup(click.Group):
    """A click group that turns sopflow's errors into their message and exit code, never a traceback."""

    def main(self, args: Sequence[str] | None = None, *rest: Any, **extra: Any) -> Any:
        given = list(sys.argv[1:] if args is None else args)
        _refuse_undecodable(given)
        return super().main(given, *rest, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        from sopflow.engine.errors import SopflowError

        try:
            return super().invoke(ctx)
        except SopflowError as exc:
            _fail(exc, ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort, BrokenPipeError):
            # A reader that went away (`sopflow history 1 | head`) is click's to handle: it exits quietly.
            raise
        except OSError as exc:
            if exc.errno not in _FULL:
                raise
            _output_failed(exc, ctx)
        except Exception as exc:
            if os.environ.get("SOPFLOW_DEBUG") == "1":
                raise
            from sopflow.cli.render import safe

            click.echo(
                f"internal error: {type(exc).__name__}: {safe(str(exc))}\n"
                "  hint: a bug in sopflow; rerun with SOPFLOW_DEBUG=1 for the traceback, and report it",
                err=True,
            )
            ctx.exit(EXIT_INTERNAL)


_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
"""A write that failed because the place it goes to is full: a disk, a quota, a file size limit."""


def _output_failed(exc: OSError, ctx: click.Context) -> NoReturn:
    """The answer could not be written (`sopflow report > file` on a full disk): a configuration problem
    (exit 2), not a bug. Whatever the command stored was committed before its answer was written."""
    # Python flushes standard output again on exit; what is left in its buffer cannot be written either.
    with contextlib.suppress(OSError, ValueError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
    reason = os.strerror(exc.errno or errno.ENOSPC).lower()
    where = f" to {exc.filename}" if exc.filename else ""
    click.echo(
        f"error: cannot write the output{where}: {reason}\n"
        "  hint: free space on the disk (or raise the quota or size limit) and run the command again",
        err=True,
    )
    ctx.exit(EXIT_USAGE)


ENVIRONMENT = ("SOPFLOW_DB", "SOPFLOW_USER", "SOPFLOW_WEBHOOK")
"""The variables sopflow reads, checked like arguments."""


def _refuse_undecodable(args: Sequence[str]) -> None:
    """Refuse an argument (or a variable sopflow reads) that is not text before anything runs. Python hands
    bytes that are not UTF-8 to the program as lone surrogates, which no database or JSON can hold: a
    terminal in GBK or Latin-1."""
    from sopflow.cli.params import not_text, show

    given = [(f"argument {n + 1}", arg) for n, arg in enumerate(args)]
    given += [(f"the variable {name}", os.environ[name]) for name in ENVIRONMENT if name in os.environ]
    for n, (place, value) in enumerate(given):
        why = not_text(value)
        if why is None:
            continue
        where = place
        if place.startswith("argument") and n and args[n - 1].startswith("-") and not not_text(args[n - 1]):
            where = f"the argument after `{args[n - 1]}`"
        message = f"{where}, {show(value)}, is not UTF-8 text ({why}): this terminal's encoding is not UTF-8"
        hint = (
            "switch the terminal to UTF-8 (e.g. `export LANG=C.UTF-8`, or `chcp 65001` on Windows) and type "
            "it again; for a file, convert it with `iconv -f GBK -t UTF-8`"
        )
        if "--json" in args:
            emit({"error": "usage", "message": message, "hint": hint})
        click.echo(f"error: {message}\n  hint: {hint}", err=True)
        sys.exit(2)


def _fail(error: Any, ctx: click.Context) -> NoReturn:
    obj = ctx.find_object(Settings)
    if obj is not None and obj.json:
        emit(error.as_dict())
    click.echo(f"error: {shown(error)}", err=True)
    ctx.exit(error.exit_code)


def shown(error: Any) -> str:
    """An error as the terminal shows it: its message, then its hint on a line of its own. Both may quote
    what someone typed or stored (a user id, a comment, a definition name): each control character in
    them, a line break included, is written as an escape, so one message never shows as two, and a long
    quote is cut short. A definition's problems keep their own `hint:` lines."""
    from sopflow.cli.render import safe, short_quotes
    from sopflow.engine.errors import DefinitionError

    parts = error.message.split("\n  hint: ") if isinstance(error, DefinitionError) else [error.message]
    text = "\n  hint: ".join(safe(short_quotes(part)) for part in parts)
    if error.hint:
        text += f"\n  hint: {safe(short_quotes(error.hint))}"
    return text


@click.group(
    cls=SopflowGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.option(
    "--db",
    envvar="SOPFLOW_DB",
    default="sqlite:///sopflow.db",
    show_default=True,
    help="Database URL (env SOPFLOW_DB): sqlite:///FILE or postgresql+psycopg://USER@HOST/DB.",
)
@click.option("--as", "user", envvar="SOPFLOW_USER", help="The user acting (env SOPFLOW_USER).")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.version_option(package_name="sopflow")
@click.pass_context
def cli(ctx: click.Context, db: str, user: str | None, as_json: bool) -> None:
    """sopflow runs standard operating procedures written as YAML state machines.

    \b
    Process owners:  validate, simulate, diagram
    Operators:       tasks, start, fire, show, list, history, reassign, delegate
    Administrators:  db upgrade, deploy, defs, audit verify, tick, worker, backup, restore, export
    Try it:          sopflow demo
    """
    s = Settings(db=db, user=user, json=as_json)
    ctx.obj = s
    ctx.call_on_close(s.close)


def _override(field_name: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        obj = ctx.find_object(Settings)
        if obj is not None and value not in (None, False):
            setattr(obj, field_name, value)

    return callback


def _accept_global_options(command: click.Command) -> None:
    """Let --db, --as and --json also follow the command (`sopflow tasks --as li.na`), as people type them."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _accept_global_options(sub)
        return
    taken = {opt for p in command.params for opt in getattr(p, "opts", [])}
    extra = [
        click.Option(
            ["--db"],
            expose_value=False,
            callback=_override("db"),
            help="Database URL (as before the command).",
        ),
        click.Option(
            ["--as", "as_user"], expose_value=False, callback=_override("user"), help="The user acting."
        ),
        click.Option(
            ["--json", "json_out"],
            is_flag=True,
            expose_value=False,
            callback=_override("json"),
            help="Print machine-readable JSON.",
        ),
    ]
    command.params.extend(o for o in extra if not set(o.opts) & taken)


def _register() -> None:
    from sopflow.cli.commands import (
        admin,
        cases,
        control,
        definitions,
        governance,
        insight,
        lifecycle,
        people,
        scenarios,
    )

    definitions.defs.add_command(lifecycle.defs_diff)
    for module in (definitions, cases, control, people, admin, scenarios, governance, lifecycle, insight):
        for command in module.COMMANDS:
            _accept_global_options(command)
            cli.add_command(command)


_register()


GC_THRESHOLD = (100_000, 10, 10)
"""The console script's collection thresholds: the first generation is collected every 100,000 net
allocations instead of CPython's 700."""


def main() -> None:
    """The console script."""
    # A command runs for a moment, and what it allocates is mostly imports and rows, not reference cycles.
    # With CPython's default thresholds, collections walking SQLAlchemy's and the engine's import-time
    # objects took ~20 ms of a `sopflow show`, and the interpreter's last full collection at exit ~40 ms
    # more. So: collect less often (as mypy does; a long `sopflow worker` still collects, every 100,000
    # allocations), and at exit freeze what is left, which the operating system reclaims at once.
    gc.set_threshold(*GC_THRESHOLD)
    try:
        cli(prog_name="sopflow")
    finally:
        gc.freeze()
