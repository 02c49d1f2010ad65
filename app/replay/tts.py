"""The replay's TTS: the real espeak-ng, in a fresh process of its own for each replay.

Why a process. espeak-ng's output depends on what the process synthesised before: the same sentence comes out
a few samples longer or shorter (about a millisecond; measured here: 53,211 then 53,231 samples for the same
text, and espeak_Terminate + espeak_Initialize does not reset it: the state is static in the library). A
replay must give the same events every time, whatever else the process replayed first (a batch, a test
session), so each replay gets a new interpreter whose espeak-ng has synthesised nothing yet: its history is
then the replay's own, which is deterministic.

The worker is `python -m app.replay.tts` speaking a tiny protocol on its pipes (one JSON line per request; a
JSON line and the raw little-endian PCM per answer), not `multiprocessing`: a spawned multiprocessing child
re-imports the caller's main module, which breaks any script without a `__main__` guard. A request waits on
the pipe in a thread (`run_in_executor`), so, like any executor work on the virtual loop, it costs no virtual
time. Starting the worker costs a few hundred ms once per replay.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import numpy as np

from providers.errors import ProviderError
from providers.tts.base import Synthesis, WordTiming
from providers.tts.espeak import RATE_MAX_WPM, RATE_MIN_WPM


class IsolatedEspeak:
    """A TtsEngine: espeak-ng with `voice` and `rate_wpm`, synthesising in a worker process of its own."""

    def __init__(self, voice: str = "en-us", rate_wpm: int = 175, *, end_pause: bool = True,
                 sample_rate: int = 8000) -> None:
        if not RATE_MIN_WPM <= rate_wpm <= RATE_MAX_WPM:
            raise ValueError(f"rate_wpm must be in [{RATE_MIN_WPM}, {RATE_MAX_WPM}], got {rate_wpm}")
        self.voice = voice
        self.rate_wpm = rate_wpm
        self.end_pause = end_pause
        self.sample_rate = sample_rate
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="replay-tts")

    async def synthesize(self, text: str) -> Synthesis:
        if not text.strip():
            return Synthesis(text=text, pcm=np.zeros(0, dtype=np.int16), sample_rate=self.sample_rate, words=())
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._request, text)

    async def aclose(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._thread.shutdown(wait=False)

    def _start(self) -> subprocess.Popen[bytes]:
        root = str(Path(__file__).resolve().parents[2])  # where `app` is importable from, installed or not
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        return subprocess.Popen([sys.executable, "-m", "app.replay.tts"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, env=env)

    def _request(self, text: str) -> Synthesis:
        with self._lock:
            if self._proc is None:
                self._proc = self._start()
            proc = self._proc
            assert proc.stdin is not None and proc.stdout is not None
            request = {"text": text, "voice": self.voice, "rate": self.rate_wpm, "end_pause": self.end_pause,
                       "sample_rate": self.sample_rate}
            try:
                proc.stdin.write(json.dumps(request).encode() + b"\n")
                proc.stdin.flush()
                head = json.loads(proc.stdout.readline() or b"null")
                if not isinstance(head, dict):
                    raise ProviderError("espeak: the replay's TTS worker exited", retryable=False)
                if not head.get("ok"):
                    raise ProviderError(f"espeak: {head.get('error')}", retryable=False)
                pcm = np.frombuffer(_read_exactly(proc.stdout, int(head["bytes"])), dtype="<i2").astype(np.int16)
            except (OSError, ValueError) as exc:
                raise ProviderError(f"espeak: the replay's TTS worker failed: {exc}", retryable=False) from exc
        words = tuple(WordTiming(int(a), int(b), float(ms)) for a, b, ms in head["words"])
        return Synthesis(text=text, pcm=pcm, sample_rate=self.sample_rate, words=words)


def _read_exactly(stream: IO[bytes], n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise ValueError("short read from the TTS worker")
    return data


def _serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """The worker: synthesise each request in order, on this fresh process's espeak-ng."""
    from providers.tts.espeak import _synthesize_blocking

    for line in stdin:
        request: dict[str, Any] = json.loads(line)
        pcm = b""
        try:
            syn = _synthesize_blocking(request["text"], request["voice"], int(request["rate"]),
                                       bool(request["end_pause"]), int(request["sample_rate"]))
            pcm = syn.pcm.astype("<i2").tobytes()
            head: dict[str, Any] = {"ok": True, "bytes": len(pcm),
                                    "words": [[w.char_start, w.char_end, w.audio_ms] for w in syn.words]}
        except Exception as exc:  # answered, not raised: the replay maps it to ProviderError
            head = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        stdout.write(json.dumps(head).encode() + b"\n")
        stdout.write(pcm)
        stdout.flush()


if __name__ == "__main__":
    _serve(sys.stdin.buffer, sys.stdout.buffer)
