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
    """`bargein serve`: one server process, or (WORKERS > 1) a supervisor of that many on one port.

    Signals (app/drain.py): the first SIGTERM or SIGINT drains (readiness 503, new calls hear the busy line,
    live calls go on until they end or DRAIN_TIMEOUT_S), the process exits once the last call is gone; a second
    one stops at once. uvicorn's own handler would close every WebSocket at the first SIGTERM, so the server is
    `DrainingServer`, whose `handle_exit` starts the drain instead. The supervisor forwards every signal it
    gets to each worker, so each drains its own calls and a second signal reaches them all.
    """
    from app.settings import SettingsError, load_settings

    # The flags are settings like any other, and win over the environment: the app gets this very object, so
    # what it derives from them (the embedded LLM's loopback URL) agrees with where uvicorn listens.
    overrides = {name: value for name, value in (("host", args.host), ("port", args.port), ("workers", args.workers))
                 if value is not None}
    try:
        settings = load_settings(**overrides)
        check_tts(settings)
        check_workers(settings)
    except SettingsError as exc:
        print(f"bargein: {exc}", file=sys.stderr)
        return 2
    options = server_options(settings, args.loop)
    workers = settings.worker_count
    if workers == 1:
        return run_server(settings, options)
    return supervise(settings, options, workers)


def check_workers(settings: Settings) -> None:
    """Refuse more than one worker with provider auth on and no STREAM_TOKEN_SECRET (SettingsError): a worker
    with its own random key would refuse every stream whose token another worker issued. Settings checks an
    explicit WORKERS itself; WORKERS=0 (the cores available) is resolved only here."""
    from app.settings import TOKEN_SECRET_REQUIRED, SettingsError

    if settings.token_secret_missing(settings.worker_count):
        raise SettingsError(f"{TOKEN_SECRET_REQUIRED} (WORKERS resolves to {settings.worker_count} here; "
                            "or run one worker: --workers 1 / WORKERS=1)")


def server_options(settings: Settings, loop: str) -> dict[str, Any]:
    """uvicorn.Config's keyword arguments for `bargein serve` (all picklable: a worker process gets them)."""
    return {
        "host": settings.host,
        "port": settings.port,
        # The sans-I/O implementation writes frames synchronously, so a clear reaches the transport
        # before the barge-in handler yields; it is also the cheapest per message.
        "ws": "websockets-sansio",
        # uvicorn's default is 16 MiB: one such message is a long stall to parse. Larger closes only that
        # stream, with 1009 (message too big).
        "ws_max_size": settings.ws_max_message_bytes,
        # "auto" is uvloop where it is installed (a dependency on Linux and macOS): measured with `bargein bench
        # --mode hold`, it cut server CPU per call-second by about 12% against the asyncio loop.
        "loop": loop,
        # Behind a TLS terminator: trust X-Forwarded-* from FORWARDED_ALLOW_IPS (read by uvicorn from the env).
        "proxy_headers": True,
        "log_level": settings.log_level.lower(),
        "access_log": False,
    }


def run_server(settings: Settings, options: dict[str, Any], sock: Any = None, llm_key: str | None = None) -> int:
    """One server process until it has drained (or was stopped): the app under `DrainingServer`."""
    import functools
    import time

    import uvicorn

    from app.drain import Drain, DrainControl
    from app.main import create_app

    log_config = configure_logging(settings)
    control = DrainControl(Drain(settings.drain_timeout_s), time.monotonic)
    config = uvicorn.Config(
        functools.partial(create_app, settings, drain=control, llm_key=llm_key),
        factory=True,
        log_config=log_config,
        **options,
    )
    server = _draining_server(config, control)
    server.run(sockets=[sock] if sock is not None else None)
    if not server.started:
        return 3  # uvicorn's STARTUP_FAILURE: the app or the socket is broken
    return 1 if control.drain.forced else 0  # 1: a second signal cut the drain short


def _draining_server(config: Any, control: Any) -> Any:
    """A uvicorn.Server whose first SIGTERM/SIGINT drains `control` (app/drain.py) instead of closing every
    socket, and which stops once the drain says so; a second signal stops it at once (uvicorn's force exit).

    uvicorn (0.54) installs `handle_exit` with signal.signal for SIGINT and SIGTERM while `serve` runs; its own
    sets `should_exit`, and the shutdown that follows closes every connection, WebSockets included (1012). Here
    the first signal is handed to the event loop (call_soon_threadsafe: the drain state only changes between
    callbacks), `on_tick` (uvicorn's main loop, every 0.1 s) polls the drain, and only its Exit sets the flag.
    The signal is not re-raised after the shutdown (uvicorn re-raises what it captured): a drained process
    exits 0.
    """
    import signal

    import uvicorn

    from app.drain import Exit, Phase, StartDrain

    logger = logging.getLogger("app.drain")

    class DrainingServer(uvicorn.Server):
        def __init__(self) -> None:
            super().__init__(config)
            self._loop: asyncio.AbstractEventLoop | None = None
            self._signalled = False

        async def serve(self, sockets: list[Any] | None = None) -> None:
            self._loop = asyncio.get_running_loop()
            await super().serve(sockets)

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self._signalled or not self.started or self._loop is None:
                # A second signal, or one before the server is up: stop now, as uvicorn would.
                self.force_exit = self._signalled
                self.should_exit = True
                if self._signalled:
                    self._loop_call(self._signal, sig)
                return
            self._signalled = True
            self._loop_call(self._signal, sig)

        def _loop_call(self, callback: Any, *args: Any) -> None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(callback, *args)

        def _signal(self, sig: int) -> None:
            action = control.signal()
            name = signal.Signals(sig).name
            if isinstance(action, StartDrain):
                logger.info("%s: draining %d live calls (readiness 503, new calls hear the busy line; goodbye "
                            "after DRAIN_TIMEOUT_S=%g s); %s again stops at once", name, control.live(),
                            control.drain.timeout_s, name)
            else:
                logger.warning("%s during the drain: stopping now, %d live calls cut", name, control.live())

        async def on_tick(self, counter: int) -> bool:
            if await super().on_tick(counter):
                return True
            if control.phase is Phase.SERVING:
                return False
            action = control.poll()
            if isinstance(action, Exit):
                logger.info("drain over (%s): stopping", action.reason)
                return True
            return False

    return DrainingServer()


def supervise(settings: Settings, options: dict[str, Any], workers: int) -> int:
    """WORKERS server processes sharing one listening socket, bound here; each builds its own app (its own
    Silero batcher, registry and drain). Every SIGTERM/SIGINT is forwarded to each worker (the first drains,
    a second stops); a worker that dies while serving is replaced; the supervisor exits when all have.

    Workers are spawned (not forked): nothing of this process's state (the TTS check's library, threads)
    leaks into them. They leave the terminal's process group, so a Ctrl+C reaches them once, through here.
    """
    import multiprocessing
    import multiprocessing.connection
    import secrets
    import signal
    import time

    import uvicorn

    log_config = configure_logging(settings)
    logger = logging.getLogger("app.workers")
    # Bound once here and handed to every worker (one accept queue), as uvicorn's own supervisor does.
    sock = uvicorn.Config(app="app.main:create_app", host=settings.host, port=settings.port,
                          log_config=log_config).bind_socket()
    context = multiprocessing.get_context("spawn")
    llm_key = secrets.token_urlsafe(32)  # one embedded-LLM key for all: a turn's request may reach any worker

    def spawn(index: int) -> Any:
        process = context.Process(target=_worker, args=(settings, options, sock, llm_key),
                                  name=f"bargein-worker-{index}")
        process.start()
        return process

    received: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: received.append(signum))
    processes = [spawn(i) for i in range(workers)]
    started = [time.monotonic()] * workers
    logger.info("supervising %d workers on %s:%d (pids %s)", workers, settings.host, settings.port,
                ", ".join(str(p.pid) for p in processes))
    stopping = False
    status = 0
    while any(p.is_alive() for p in processes):
        multiprocessing.connection.wait([p.sentinel for p in processes if p.is_alive()], timeout=0.2)
        while received:
            signum = received.pop(0)
            stopping = True
            logger.info("%s: passing it to %d workers", signal.Signals(signum).name,
                        sum(p.is_alive() for p in processes))
            for p in processes:
                if p.is_alive() and p.pid is not None:
                    os.kill(p.pid, signal.SIGTERM)
        for i, p in enumerate(processes):
            if p.is_alive() or stopping:
                continue
            if p.exitcode == 3 or time.monotonic() - started[i] < 5.0:
                # A worker that fails at startup fails the same way every time: stop instead of looping.
                logger.error("worker %d (pid %s) failed to start (exit %s): stopping", i, p.pid, p.exitcode)
                stopping, status = True, 1
                for q in processes:
                    if q.is_alive() and q.pid is not None:
                        os.kill(q.pid, signal.SIGTERM)
                continue
            logger.error("worker %d (pid %s) died (exit %s): starting another", i, p.pid, p.exitcode)
            processes[i], started[i] = spawn(i), time.monotonic()
    sock.close()
    # A worker still importing when the signal came has no handler yet and dies by it (exit -15): it held no
    # call, so that is a clean stop too.
    clean = (0, -signal.SIGTERM, -signal.SIGINT) if stopping else (0,)
    return status or int(any(p.exitcode not in clean for p in processes))


def _worker(settings: Settings, options: dict[str, Any], sock: Any, llm_key: str) -> None:
    """A worker process (spawned by `supervise`): one DrainingServer on the shared socket."""
    os.setpgid(0, 0)  # out of the terminal's process group: signals come from the supervisor only
    raise SystemExit(run_server(settings, options, sock=sock, llm_key=llm_key))


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

    if settings.tts_engine != "espeak":
        return  # a hosted engine is configured by keys the settings check; calling the vendor here would bill it
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
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="server processes on the one port, each with its own app (default: WORKERS from the "
                        "environment, else 0 = the cores available)")


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
