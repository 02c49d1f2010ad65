"""Make the replay fixtures: real calls to the real server, recorded by its live recorder.

    python -m app.replay.make_fixtures [--out tests/recordings/calls] [--corpus tests/corpus]

Starts the app under uvicorn on a loopback port with RECORD_DIR set (default settings otherwise: the embedded
scripted LLM, espeak-ng, insecure development mode so the emulator needs no signatures), then places calls with
the provider-edge emulator (app/edge/emulator.py) over real sockets in real time, on both providers:

- `bargein`: the caller talks over the greeting (a corpus sentence 1 s into it) and hangs up after a reply.
- `noise`: steady background noise during the greeting; the agent must not stop.
- `midsentence`: the caller hangs up 1.5 s into the greeting, so the call ends mid-sentence.
- `reconnect`: the stream ends, the same call reconnects on a new stream and the caller talks.

Each recording is copied to `<out>/<provider>_<case>.jsonl.gz`. Rerunnable: the files are overwritten (live
calls differ run to run by a few ms; `bargein replay` judges them with the real-time tolerance). Takes about
half a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import socket
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from app.edge.emulator import EmulatedCall
from app.edge.served import ServedApp
from app.edge.wire import Provider
from app.main import create_app
from app.offline import corpus
from app.record.format import decompress, recording_path
from app.settings import Settings

SPEECH = "speech/read_01_libri3982F.wav"  # 1.7 s of read speech
NOISE = "noise/rain_01.wav"  # steady rain: background the agent must talk through
NOISE_S = 2.5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _first_audio(call: EmulatedCall) -> None:
    await call.wait_until(lambda: call.played_samples > 0, 15)


async def _ended(url: str, call_id: str) -> None:
    async with httpx.AsyncClient(trust_env=False) as client:
        for _ in range(200):
            response = await client.get(f"{url}/calls/{call_id}")
            if response.status_code == 200 and not response.json()["active"]:
                return
            await asyncio.sleep(0.05)
    raise TimeoutError(f"call {call_id} did not end")


async def bargein(provider: Provider, url: str, root: Path) -> str:
    async with EmulatedCall.start(provider, url) as call:
        await _first_audio(call)
        await asyncio.sleep(1.0)
        await call.send_wav(root / SPEECH)
        await call.send_silence(1.6)
    return call.call_id


async def noise(provider: Provider, url: str, root: Path) -> str:
    pcm = corpus.load_clip(NOISE, root)[: int(NOISE_S * 8000)]
    async with EmulatedCall.start(provider, url) as call:
        await _first_audio(call)
        await asyncio.sleep(0.3)
        await call.send_audio(np.asarray(pcm, dtype=np.int16))
        await call.send_silence(0.3)
    return call.call_id


async def midsentence(provider: Provider, url: str, root: Path) -> str:
    async with EmulatedCall.start(provider, url) as call:
        await _first_audio(call)
        await asyncio.sleep(1.5)
    return call.call_id


async def reconnect(provider: Provider, url: str, root: Path) -> str:
    async with EmulatedCall.start(provider, url) as first:
        await _first_audio(first)
        await asyncio.sleep(0.8)
    await _ended(url, first.call_id)
    async with EmulatedCall.start(provider, url, call_id=first.call_id, answer=False) as again:
        await asyncio.sleep(0.4)
        await again.send_wav(root / SPEECH)
        await again.send_silence(1.4)
    return first.call_id


CASES: dict[str, Callable[[Provider, str, Path], Coroutine[Any, Any, str]]] = {
    "bargein": bargein, "noise": noise, "midsentence": midsentence, "reconnect": reconnect,
}


def make(out: Path, root: Path, providers: tuple[Provider, ...] = ("twilio", "plivo"), **overrides: Any) -> list[Path]:
    """Record every case on every provider into `out`; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="bargein-fixtures-") as record_dir:
        port = _free_port()
        settings = Settings(_env_file=None, host="127.0.0.1", port=port,
                            public_url=f"http://127.0.0.1:{port}", record_dir=record_dir, **overrides)
        made: list[tuple[str, str]] = []
        with ServedApp(create_app(settings), port=settings.port) as server:
            for provider in providers:
                for case, place in CASES.items():
                    call_id = asyncio.run(place(provider, server.url, root))
                    asyncio.run(_ended(server.url, call_id))
                    made.append((f"{provider}_{case}", call_id))
        # Leaving the block stopped the server, and with it the recorder, which wrote and closed every file.
        for name, call_id in made:
            target = out / f"{name}.jsonl.gz"
            # As one gzip member (the recorder writes zstd frames; both read the same): fixtures are kept in git,
            # where a file that is the same bytes for the same lines diffs only where a decision moved.
            lines = decompress(recording_path(record_dir, call_id).read_bytes())
            target.write_bytes(gzip.compress(lines, compresslevel=9, mtime=0))
            written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--out", default="tests/recordings/calls", help="where the recordings go")
    parser.add_argument("--corpus", default="tests/corpus", help="the corpus the clips come from")
    args = parser.parse_args(argv)
    for path in make(Path(args.out), Path(args.corpus)):
        print(f"{path}  {path.stat().st_size / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
