"""The `bargein` command: `bargein serve` runs the server, `bargein bench` runs the benchmark."""

from __future__ import annotations

import argparse
import logging
import os
import sys

# Multithreaded BLAS only fights the event loop for the two cores here; numpy reads this at import.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.settings import Settings

    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
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
        access_log=False,
    )
    return 0


def bench(args: argparse.Namespace, rest: list[str]) -> int:
    from app.bench import main as bench_main

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
