"""The `bargein` command: `serve` runs the server, `bench` the benchmark, `call` places a test call; `replay`,
`export` and `report` take call recordings.

A subcommand is one `register(...)` line in `add_subcommands`, with a function that adds its options (each with
a help text: tests/test_cli.py checks) and one that runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from app.version import version

# Multithreaded BLAS only fights the event loop for the two cores here; numpy reads this at import.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

if TYPE_CHECKING:
    from app.settings import Settings


def serve(args: argparse.Namespace) -> int:
    import functools

    import uvicorn

    from app.main import create_app
    from app.settings import SettingsError, load_settings

    # The flags are settings like any other, and win over the environment: the app gets this very object, so
    # what it derives from them (the embedded LLM's loopback URL) agrees with where uvicorn listens.
    overrides = {name: value for name, value in (("host", args.host), ("port", args.port)) if value is not None}
    try:
        settings = load_settings(**overrides)
        check_tts(settings)
    except SettingsError as exc:
        print(f"bargein: {exc}", file=sys.stderr)
        return 2
    log_config = configure_logging(settings)
    uvicorn.run(
        functools.partial(create_app, settings),
        factory=True,
        host=settings.host,
        port=settings.port,
        # The sans-I/O implementation writes frames synchronously, so a clear reaches the transport
        # before the barge-in handler yields; it is also the cheapest per message.
        ws="websockets-sansio",
        # uvicorn's default is 16 MiB: one such message is a long stall to parse. Larger closes only that
        # stream, with 1009 (message too big).
        ws_max_size=settings.ws_max_message_bytes,
        # "auto" is uvloop where it is installed (a dependency on Linux and macOS): measured with `bargein bench
        # --mode hold`, it cut server CPU per call-second by about 12% against the asyncio loop.
        loop=args.loop,
        # Behind a TLS terminator: trust X-Forwarded-* from FORWARDED_ALLOW_IPS (read by uvicorn from the env).
        proxy_headers=True,
        log_level=settings.log_level.lower(),
        log_config=log_config,
        access_log=False,
    )
    return 0


def configure_logging(settings: Settings) -> dict[str, Any]:
    """Set up the root logger for LOG_FORMAT and return the log_config for uvicorn's own loggers.

    uvicorn.run applies its log_config with logging.config.dictConfig, which configures only the loggers it
    names ("uvicorn", "uvicorn.error", "uvicorn.access"; their handlers do not propagate) and leaves the root
    handler set up here in place. Text mode hands it uvicorn's own default, as before; json mode the same
    handlers with every formatter replaced by JsonFormatter, so uvicorn's start-up lines are JSON too.

    Either way the root handlers get app.logctx's filter, so every line of a call names its call and stream.
    """
    import copy

    from uvicorn.config import LOGGING_CONFIG

    from app import logctx
    from app.logformat import JsonFormatter, TextFormatter

    level = settings.log_level.upper()
    handler = logging.StreamHandler()  # stderr, as basicConfig's
    if settings.log_format == "text":
        handler.setFormatter(TextFormatter())
        logging.basicConfig(level=level, handlers=[handler])
        logctx.install(logging.getLogger().handlers)
        return LOGGING_CONFIG
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=level, handlers=[handler])
    logctx.install(logging.getLogger().handlers)
    logging.captureWarnings(True)  # a Python warning would otherwise be a bare multi-line text on stderr
    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"] = {name: {"()": JsonFormatter} for name in config["formatters"]}
    return config


def check_tts(settings: Settings) -> None:
    """Refuse an unknown TTS_ENGINE or TTS_VOICE before serving (SettingsError), rather than every call in silence.

    The voice is tried by synthesising one letter: espeak-ng itself decides (names, files and language tags, see
    providers/tts/espeak.py), for the ~0.1 s of loading the library the first call would pay anyway.
    """
    from app.main import build_tts
    from app.settings import SettingsError, env_name
    from providers.errors import ProviderError

    try:
        tts = build_tts(settings)
        asyncio.run(tts.synthesize("a"))
    except ProviderError as exc:
        if not isinstance(exc.__cause__, ValueError):
            raise  # the engine itself failed, not the setting
        raise SettingsError(
            f"{env_name('tts_voice')} must be a voice espeak-ng knows (e.g. en-us, en-gb, fr-fr), "
            f"got {settings.tts_voice!r}"
        ) from None
    except ValueError as exc:
        if settings.tts_engine != "espeak":
            raise SettingsError(
                f"{env_name('tts_engine')} must be one of: espeak, got {settings.tts_engine!r}"
            ) from None
        raise SettingsError(f"{env_name('tts_voice')}: {exc}, got {settings.tts_voice!r}") from None


def bench(args: argparse.Namespace, rest: list[str]) -> int:
    from app.bench.run import main as bench_main

    return bench_main(rest)


def add_serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=None, metavar="ADDR",
                   help="address to listen on (default: HOST from the environment, else 0.0.0.0)")
    p.add_argument("--port", type=int, default=None, metavar="N",
                   help="port to listen on (default: PORT from the environment, else 8080)")
    p.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto",
                   help="event loop (default: uvloop when installed)")


Run = Callable[[argparse.Namespace, list[str]], int]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help: str,
    add_args: Callable[[argparse.ArgumentParser], None] | None,
    run: Run,
    *,
    passthrough: bool = False,
) -> argparse.ArgumentParser:
    """Add the subcommand `name`: `add_args` defines its options (each with a help text), `run(args, rest)`
    runs it and returns the exit status.

    A `passthrough` command parses its own arguments (`run` gets them all in `rest`, `--help` included), as
    `bench` does with app/bench/run.py's parser; any other command refuses an argument it does not define.
    """
    p = sub.add_parser(name, help=help, description=help, add_help=not passthrough)
    if add_args is not None:
        add_args(p)
    p.set_defaults(_run=run, _passthrough=passthrough)
    return p


def add_subcommands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Every `bargein` subcommand; a new one is one `register` line (and its add_args / run functions)."""
    register(sub, "serve", "run the server (settings from the environment / .env)", add_serve_args,
             lambda args, rest: serve(args))
    register(sub, "bench", "run the benchmark (see `bargein bench --help`)", None, bench, passthrough=True)
    # Each imports its heavy parts (numpy, plotly, the emulator) only when it runs, so --help stays fast.
    from app import callcli
    from app.record import export as record_export
    from app.replay import cli as replay_cli
    from app.report import cli as report_cli

    register(sub, "call", "place one call through the provider-edge emulator and save what the caller heard",
             callcli.add_arguments, lambda args, rest: callcli.run(args))
    register(sub, "export", "write a call recording as a stereo WAV: the caller left, the agent as heard right",
             record_export.add_arguments, lambda args, rest: record_export.run(args))
    register(sub, "replay", "replay recorded calls and scenarios against this build; exit 1 on a difference",
             replay_cli.add_arguments, lambda args, rest: replay_cli.run(args))
    register(sub, "report", "draw a call recording as one zoomable HTML page (or a PNG of it)",
             report_cli.add_arguments, lambda args, rest: report_cli.run(args))


def build_parser() -> argparse.ArgumentParser:
    """The `bargein` command line: `--version` and the subcommands of `add_subcommands`."""
    parser = argparse.ArgumentParser(prog="bargein", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="what to run; `bargein COMMAND --help` for its options")
    add_subcommands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and not args._passthrough:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    run: Run = args._run
    return run(args, rest)


if __name__ == "__main__":
    raise SystemExit(main())
