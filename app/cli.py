"""The `bargein` command: `bargein serve` runs the server, `bargein bench` runs the benchmark."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

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
    """
    import copy

    from uvicorn.config import LOGGING_CONFIG

    level = settings.log_level.upper()
    if settings.log_format == "text":
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return LOGGING_CONFIG
    from app.logformat import JsonFormatter

    handler = logging.StreamHandler()  # stderr, as basicConfig's
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=level, handlers=[handler])
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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="bargein", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the server (settings from the environment / .env)")
    p_serve.add_argument("--host", default=None)
    p_serve.add_argument("--port", type=int, default=None)
    p_serve.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto",
                         help="event loop (default: uvloop when installed)")
    sub.add_parser("bench", help="run the benchmark (see `bargein bench --help`)", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "serve":
        return serve(args)
    return bench(args, rest)


if __name__ == "__main__":
    raise SystemExit(main())
