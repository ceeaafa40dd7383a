"""`mumo <verb>`: a thin command line over the public API. Library errors become one line and exit 2.

One module per noun holds its commands (typed functions that parse, call the library and print); this
module registers them on one typer ``app``, in the order ``mumo --help`` lists them, and maps every error
to one line in :func:`main`.

``mumo --help``, ``mumo COMMAND --help`` and usage mistakes answer without importing torch (seconds of the
wait): the noun modules import only typer and light modules at the top, and the library inside each
command's body.
"""

from __future__ import annotations

import logging
import os
import sys

import typer

from mumo.cli import data, evaluate, generate, models, serve, train
from mumo.errors import MumoError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="mumo: vision-language models in PyTorch.")
app.add_typer(data.app, name="data")  # a group: typer lists it after the commands

# Every command and the module it lives in; this order is the order of `mumo --help`.
app.command()(models.version)
app.command()(models.models)
app.command("list-models", help="List registered models (same as `mumo models`).")(models.models)
app.command()(models.info)
app.command(context_settings={"allow_extra_args": False})(train.train)
app.command(context_settings={"allow_extra_args": False})(train.finetune)
app.command("eval")(evaluate.eval_)
app.command("zero-shot")(evaluate.zero_shot)
app.command()(generate.caption)
app.command()(generate.ask)
app.command()(generate.generate)
app.command()(evaluate.embed)
app.command()(serve.index)
app.command()(serve.search)
app.command()(serve.serve)
app.command()(train.demo)
app.command()(models.convert)
app.command()(evaluate.probe)
app.command()(evaluate.interpolate)
app.command()(train.compare)
app.command()(train.report)


def _one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines included) as one space: one line on stderr."""
    return " ".join(str(text).split())


def _usage_error(e: Exception) -> str:
    """A usage mistake as one line: click's message, then where to read the command's usage."""
    ctx = getattr(e, "ctx", None)
    where = f" (see '{ctx.command_path} --help')" if ctx is not None else " (see 'mumo --help')"
    if type(e).__name__ == "NoArgsIsHelpError":  # the help was just printed to stdout
        return "missing a command: choose one of those listed above"
    close = getattr(e, "possibilities", None)
    if close:  # an unknown option: name the closest ones
        return f"no such option {e.option_name}; did you mean {' or '.join(close[:3])}?{where}"
    return _one_line(e.format_message()) + where


def _click_errors() -> tuple[type[Exception], ...]:
    """The exceptions of a command-line mistake. typer >= 0.29 bundles its own click, whose exceptions
    derive from typer.TyperException, not from click.ClickException; an older typer raises click's own.
    Standalone click is looked up, not imported: code that can raise its exceptions has imported it, and
    importing it here would cost every `mumo --help` its import time."""
    errors: list[type[Exception]] = [typer.TyperException] if hasattr(typer, "TyperException") else []
    click = sys.modules.get("click")
    if click is not None:
        errors.append(click.ClickException)
    return tuple(errors)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``mumo`` console script (``argv``: the arguments, default ``sys.argv[1:]``).

    Every mistake ends in one line on stderr and exit code 2: usage errors (an unknown command or option,
    a missing or malformed value), the library's own errors, and a file that cannot be read or written.
    Anything else is a bug in mumo: one line, exit 1, and MUMO_TRACEBACK=1 shows the traceback.

    A process of a ``torchrun`` launch (``WORLD_SIZE`` > 1) ends without the interpreter's teardown, once
    its output is flushed (:func:`_end_worker`).
    """
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        _run(argv)
        return
    try:
        _run(argv)
    except SystemExit as e:
        _end_worker(e.code if isinstance(e.code, int) else 0 if e.code is None else 1)
    _end_worker(0)


def _end_worker(code: int) -> None:
    """Flush and leave a torchrun process with ``code``, skipping the interpreter's teardown.

    The gloo backend's threads (``pt_gloo_runloop``, ``gloo_tcp_loop``) outlive ``destroy_process_group``
    and the run's model (the group's C++ object is still referenced), so they still run when the interpreter
    tears down; a C++ thread that needs Python then is ended mid-unwind, which aborts the process
    ("terminate called without an active exception", exit 134). A finished FSDP run in CI ended so, after
    saving its final model; upstream's fix for this teardown race was abandoned (pytorch/pytorch#179291).
    A run has written and closed all it keeps by now (checkpoints, metrics, TensorBoard): the teardown has
    nothing left to do.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can be written anyway
            pass
    os._exit(code)


def _run(argv: list[str] | None) -> None:
    """:func:`main`'s work: the command, and every error mapped to one line and its exit code."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        # click returns, not raises, a command's typer.Exit code in non-standalone mode
        code = app(argv, standalone_mode=False, prog_name="mumo")
        if isinstance(code, int) and code:
            sys.exit(code)
    except _click_errors() as e:
        _fail(_usage_error(e) if getattr(e, "exit_code", 1) == 2 else _one_line(e.format_message()))
    except MumoError as e:
        _fail(_one_line(e))
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        _say("aborted")
        sys.exit(130)
    except OSError as e:  # a path the user gave that cannot be read or written
        if e.filename is None or os.environ.get("MUMO_TRACEBACK"):
            raise
        _fail(_one_line(f"{e.filename}: {e.strerror or e}"))
    except Exception as e:  # noqa: BLE001 - a bug: still one line, the traceback on request
        if os.environ.get("MUMO_TRACEBACK"):
            raise
        _say(
            _one_line(f"error: unexpected {type(e).__name__}: {e}")
            + " (a bug in mumo; rerun with MUMO_TRACEBACK=1 and report the traceback)"
        )
        sys.exit(1)


def _fail(message: str) -> None:
    """Print ``error: MESSAGE`` on stderr and exit 2, the code of every mistake the user can fix."""
    _say(f"error: {message}")
    sys.exit(2)


def _say(line: str) -> None:
    """Write ``line`` and its newline to stderr in one write. ``torchrun`` starts its processes with
    ``python -u`` (stderr unbuffered), where ``print`` writes the text and the newline in two: two ranks
    failing at once then ran their lines together ("...does not existerror: shard folder ...")."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
