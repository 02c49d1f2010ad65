"""A TTS cache: a text that every call speaks is synthesised once, and its audio and alignment are shared.

The greeting, the fallback line, the busy line and the drain goodbye are the same for every call. Without a
cache, 100 calls arriving together synthesise the same greeting 100 times, one after another on espeak's single
worker thread, and the last caller waits for all the others. `CachedTts` wraps any `TtsEngine`:

- **Key.** `(identity, text)`. `identity` names the engine and everything that changes its output (engine,
  voice, rate, sample rate, end pause): `espeak_identity()` builds it for `EspeakTts`. Several `CachedTts`
  handles can share one `SynthesisCache` (one budget); handles with different voices never share an entry.
- **One synthesis per text at a time.** The first request for a text starts the inner synthesis as a task;
  every request for the same key that comes while it runs awaits that task (through `asyncio.shield`, so a
  waiter that is cancelled, e.g. by a barge-in or the sentence timeout, neither cancels it nor loses it for the
  others). A failure reaches every waiter and is not cached: the next request tries again.
- **Bounded by bytes, segmented LRU.** An entry costs its audio bytes plus an estimate for its text and word
  timings. A new entry goes into the probation segment; a hit moves it to the protected segment (at most
  `PROTECTED_SHARE` of the budget, its least recent entries falling back to probation). Eviction takes the least
  recently used probation entry first. So a stream of one-off LLM sentences, each seen once, cycles through
  probation and never pushes out the lines every call repeats. An entry bigger than the whole budget is
  returned but not kept.
- **Shared, read-only audio.** Every caller gets the same `Synthesis` object; its samples are made read-only, so
  a consumer that tried to change them in place would fail loudly instead of changing another call's audio.

All bookkeeping runs on the event loop's thread; a threading lock guards the entries so that handles used from
several event loops (one per thread) stay consistent. In-flight sharing is per event loop: a request from
another loop synthesises by itself.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from providers.tts.base import Synthesis, TtsEngine, at_pace
from providers.tts.espeak import EspeakTts

PROTECTED_SHARE = 0.8  # of max_bytes: entries hit at least twice
# Per word timing and per text character, on top of the audio: a slotted dataclass with three numbers is about
# 100 bytes in CPython, a str character 1-4 bytes. Only the audio is large; these keep tiny entries honest.
_WORD_BYTES = 128
_CHAR_BYTES = 4
_ENTRY_BYTES = 256  # the key tuple, the dict slot, the Synthesis object


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters since the cache was made (or cleared)."""

    hits: int  # served from a kept entry
    shared: int  # joined a synthesis already running for the same key
    misses: int  # started a synthesis
    evictions: int
    entries: int
    bytes: int


def espeak_identity(engine: EspeakTts) -> str:
    """Everything that changes an `EspeakTts` handle's output for a given text."""
    return f"espeak:{engine.voice}:{engine.rate_wpm}:{engine.sample_rate}:{int(engine.end_pause)}"


def entry_bytes(synthesis: Synthesis) -> int:
    """What keeping `synthesis` costs, in bytes (audio plus an estimate for the rest)."""
    return (
        int(synthesis.pcm.nbytes)
        + len(synthesis.ulaw)
        + _CHAR_BYTES * len(synthesis.text)
        + _WORD_BYTES * len(synthesis.words)
        + _ENTRY_BYTES
    )


_Key = tuple[str, str]


class SynthesisCache:
    """The kept syntheses and the running ones, shared by every `CachedTts` handle built on it."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self._protected_max = int(max_bytes * PROTECTED_SHARE)
        self._probation: OrderedDict[_Key, Synthesis] = OrderedDict()  # least recent first
        self._protected: OrderedDict[_Key, Synthesis] = OrderedDict()
        self._sizes: dict[_Key, int] = {}
        self._probation_bytes = 0
        self._protected_bytes = 0
        self._inflight: dict[_Key, asyncio.Task[Synthesis]] = {}
        self._lock = threading.Lock()
        self._hits = self._shared = self._misses = self._evictions = 0

    @property
    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                hits=self._hits,
                shared=self._shared,
                misses=self._misses,
                evictions=self._evictions,
                entries=len(self._sizes),
                bytes=self._probation_bytes + self._protected_bytes,
            )

    def __contains__(self, key: object) -> bool:
        """Whether `(identity, text)` is kept (not a hit, and the order does not change)."""
        with self._lock:
            return key in self._sizes

    async def get(self, key: _Key, synthesize: Callable[[], Awaitable[Synthesis]]) -> Synthesis:
        """The kept synthesis for `key`, or the one running for it, or a new one from `synthesize()`."""
        found = self._lookup(key)
        if found is not None:
            return found
        loop = asyncio.get_running_loop()
        task = self._inflight.get(key)
        if task is not None and task.get_loop() is loop:
            with self._lock:
                self._shared += 1
        else:
            with self._lock:
                self._misses += 1
            task = loop.create_task(_run(synthesize))
            if key not in self._inflight:  # one from another event loop stays the one others join
                self._inflight[key] = task
                task.add_done_callback(lambda done: self._finished(key, done))
        # shield: a cancelled waiter leaves the synthesis running for the others (and for the cache).
        return await asyncio.shield(task)

    def clear(self) -> None:
        """Drop every kept entry, cancel the running syntheses and reset the counters."""
        with self._lock:
            self._probation.clear()
            self._protected.clear()
            self._sizes.clear()
            self._probation_bytes = self._protected_bytes = 0
            self._hits = self._shared = self._misses = self._evictions = 0
        for task in list(self._inflight.values()):
            task.cancel()
        self._inflight.clear()

    # ---- the segmented LRU ---------------------------------------------------------------------------------

    def _lookup(self, key: _Key) -> Synthesis | None:
        with self._lock:
            synthesis = self._protected.get(key)
            if synthesis is not None:
                self._protected.move_to_end(key)
                self._hits += 1
                return synthesis
            synthesis = self._probation.pop(key, None)
            if synthesis is None:
                return None
            # A second use: promote to the protected segment.
            size = self._sizes[key]
            self._probation_bytes -= size
            self._protected[key] = synthesis
            self._protected_bytes += size
            self._demote()
            self._hits += 1
            return synthesis

    def _finished(self, key: _Key, task: asyncio.Task[Synthesis]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if task.cancelled():
            return
        if task.exception() is not None:  # retrieved here, so an error nobody awaited is not reported twice
            return
        self._keep(key, task.result())

    def _keep(self, key: _Key, synthesis: Synthesis) -> None:
        size = entry_bytes(synthesis)
        if size > self.max_bytes:
            return
        synthesis.pcm.flags.writeable = False
        with self._lock:
            if key in self._sizes:
                return
            self._probation[key] = synthesis
            self._sizes[key] = size
            self._probation_bytes += size
            self._evict()

    def _demote(self) -> None:
        # Protected entries past their share fall back to the most recent end of probation.
        while self._protected_bytes > self._protected_max and self._protected:
            key, synthesis = self._protected.popitem(last=False)
            size = self._sizes[key]
            self._protected_bytes -= size
            self._probation[key] = synthesis
            self._probation_bytes += size
        self._evict()

    def _evict(self) -> None:
        while self._probation_bytes + self._protected_bytes > self.max_bytes:
            segment = self._probation if self._probation else self._protected
            key, _ = segment.popitem(last=False)
            size = self._sizes.pop(key)
            if segment is self._probation:
                self._probation_bytes -= size
            else:
                self._protected_bytes -= size
            self._evictions += 1


async def _run(synthesize: Callable[[], Awaitable[Synthesis]]) -> Synthesis:
    return await synthesize()


class CachedTts:
    """A `TtsEngine` that synthesises each text once through `cache`, under the inner engine's `identity`."""

    def __init__(self, inner: TtsEngine, identity: str, cache: SynthesisCache) -> None:
        self._inner = inner
        self.identity = identity
        self.cache = cache

    async def synthesize(self, text: str) -> Synthesis:
        """The kept synthesis of `text`, or the one running for it, or a new one (see the module docstring)."""
        if not text.strip() or self.cache.max_bytes == 0:
            return await self._inner.synthesize(text)
        return await self.cache.get((self.identity, text), lambda: self._inner.synthesize(text))

    def paced(self, factor: float) -> TtsEngine:
        """The inner engine at `factor` x its rate, under its own key in the same cache; this handle itself when
        the inner engine cannot change its rate."""
        inner = at_pace(self._inner, factor)
        if inner is self._inner:
            return self
        return CachedTts(inner, f"{self.identity}:pace={factor:g}", self.cache)

    async def aclose(self) -> None:
        """Close the inner engine (the cache may serve other handles: `cache.clear()` empties it)."""
        await self._inner.aclose()


def cached_tts(engine: EspeakTts, max_mb: float) -> TtsEngine:
    """`engine` behind a cache of its own of `max_mb` MiB (TTS_CACHE_MAX_MB); 0 returns the engine itself."""
    if max_mb <= 0:
        return engine
    return CachedTts(engine, espeak_identity(engine), SynthesisCache(int(max_mb * 1024 * 1024)))
