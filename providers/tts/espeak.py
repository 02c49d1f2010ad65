"""espeak-ng as the embedded TTS: no network, no key, word timings included.

The C library and its data ship in the `espeakng-loader` wheel; this module binds the few calls it needs
with ctypes (espeak-ng `src/include/espeak-ng/speak_lib.h`, API revision 12) and runs them in synchronous
retrieval mode: `espeak_Synth` returns only when the whole text is synthesised, having handed every audio
block and event list to our callback on the calling thread.

espeak-ng keeps one global synthesiser per process (one voice, one callback, one output buffer) and is not
re-entrant, so every C call here runs on one dedicated worker thread, one job at a time. ctypes releases the
GIL for the duration of the foreign call, so the event loop keeps running while a sentence is synthesised.

One engine per process means one sentence at a time: with many calls speaking at once, a sentence waits for
every sentence queued before it (`app/bench/tts_queue.py` measures that wait). `EspeakTts(processes=N)` runs
the same synthesis in a pool of N worker processes instead, each with its own espeak-ng, behind the same
interface: up to N sentences at once (as many as there are cores to run them). The pool is per process and
per size, created on first use; its workers are started with `forkserver` (a fork of this process, which has
threads, could copy a lock held by one of them). A job that has not started is dropped when its caller is
cancelled, as with the thread.
"""

from __future__ import annotations

import asyncio
import ctypes
import multiprocessing
import os
import threading
import time
import unicodedata
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from providers.errors import map_vendor_errors
from providers.resample import resample
from providers.tts.base import Synthesis, WordTiming

# speak_lib.h constants.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # without it a missing data folder makes espeak_Initialize call exit()
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_PARAM_RATE = 1
_EE_OK = 0
RATE_MIN_WPM = 80
RATE_MAX_WPM = 450

# Length of the audio blocks handed to the callback. Longer blocks mean fewer trips back into Python (each
# one takes the GIL) for the same audio.
_BUFFER_MS = 200


class _EventId(ctypes.Union):
    _fields_ = [
        ("number", ctypes.c_int),
        ("name", ctypes.c_char_p),
        ("string", ctypes.c_char * 8),
    ]


class _Event(ctypes.Structure):
    # espeak_EVENT. On LP64 the six 4-byte fields fill 24 bytes, so user_data needs no padding and the union
    # (8 bytes: a pointer or char[8]) follows at offset 32: 40 bytes in all. ctypes applies the C alignment
    # rules.
    _fields_ = [
        ("type", ctypes.c_int),  # espeak_EVENT_TYPE, an int-sized enum
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # 1-based, counted in characters (not bytes) for UTF-8 input
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms from the start of this espeak_Synth call's audio
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


class _Voice(ctypes.Structure):
    # espeak_VOICE. `languages` is a void pointer because espeak_GetCurrentVoice returns it as a list of
    # (priority byte, NUL-terminated tag) pairs ended by a zero byte, which c_char_p would cut at the first tag.
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass
class _Job:
    """What the callback collects during one espeak_Synth call."""

    blocks: list[bytes] = field(default_factory=list)
    words: list[tuple[int, int]] = field(default_factory=list)  # (0-based char position, audio ms)
    error: BaseException | None = None


class _Library:
    """The bound, initialised C library. Created and used only on the worker thread."""

    def __init__(self) -> None:
        import espeakng_loader  # third-party, untyped; imported here so importing this module stays free

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetVoiceByProperties.argtypes = [ctypes.POINTER(_Voice)]
        lib.espeak_SetVoiceByProperties.restype = ctypes.c_int
        lib.espeak_GetCurrentVoice.argtypes = []
        lib.espeak_GetCurrentVoice.restype = ctypes.POINTER(_Voice)
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,  # text
            ctypes.c_size_t,  # size
            ctypes.c_uint,  # position
            ctypes.c_int,  # position_type
            ctypes.c_uint,  # end_position
            ctypes.c_uint,  # flags
            ctypes.POINTER(ctypes.c_uint),  # unique_identifier
            ctypes.c_void_p,  # user_data
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        data_path = os.fsencode(espeakng_loader.get_data_path())
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, data_path, _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed ({rate}); data path {data_path!r}")
        self.sample_rate: int = rate
        self._lib = lib
        # The C side keeps only a raw pointer to the callback: this reference keeps the thunk alive.
        self._callback = _SynthCallback(self._on_synth)
        lib.espeak_SetSynthCallback(self._callback)
        self._job = _Job()
        self._voice: str | None = None
        self._rate_wpm: int | None = None

    def _on_synth(self, wav: ctypes._Pointer[ctypes.c_short], n_samples: int, events: ctypes._Pointer[_Event]) -> int:
        # An exception escaping a ctypes callback is printed and swallowed; keep it and abort the synthesis
        # instead.
        try:
            if wav and n_samples > 0:
                self._job.blocks.append(ctypes.string_at(wav, n_samples * 2))
            i = 0
            while events[i].type != _EVENT_LIST_TERMINATED:
                event = events[i]
                if event.type == _EVENT_WORD:
                    self._job.words.append((event.text_position - 1, event.audio_position))
                i += 1
        except BaseException as exc:  # re-raised by synth(), on the same thread, once espeak_Synth returns
            self._job.error = exc
            return 1
        return 0

    def _configure(self, voice: str, rate_wpm: int) -> None:
        if voice != self._voice:
            self._voice = None
            self._select_voice(voice)
            self._voice = voice
            # Loading a voice reloads its default speed, so the rate must be applied again.
            self._rate_wpm = None
        if rate_wpm != self._rate_wpm:
            code = self._lib.espeak_SetParameter(_PARAM_RATE, rate_wpm, 0)
            if code != _EE_OK:
                raise RuntimeError(f"espeak_SetParameter(rate) failed ({code})")
            self._rate_wpm = rate_wpm

    def _select_voice(self, voice: str) -> None:
        encoded = voice.encode("utf-8")
        if self._lib.espeak_SetVoiceByName(encoded) == _EE_OK:
            return
        # SetVoiceByName matches voice names and files ("en", "en-us"); a language tag such as "en-gb" or
        # "fr-fr" is only found through the voices' language lists, by SetVoiceByProperties. That call settles
        # on the closest voice ("no-such-voice" gets Norwegian, for "no"), so the tag must be listed exactly.
        tag = ctypes.create_string_buffer(encoded)
        code = self._lib.espeak_SetVoiceByProperties(ctypes.byref(_Voice(languages=ctypes.addressof(tag))))
        if code != _EE_OK or voice.lower() not in self._current_languages():
            raise ValueError(f"unknown espeak-ng voice {voice!r}")

    def _current_languages(self) -> list[str]:
        current = self._lib.espeak_GetCurrentVoice()
        address = current.contents.languages if current else None
        languages: list[str] = []
        while address and ctypes.string_at(address, 1) != b"\x00":
            tag = ctypes.string_at(address + 1)  # up to the NUL
            languages.append(tag.decode("utf-8", "replace").lower())
            address += len(tag) + 2
        return languages

    def synth(
        self, text: str, voice: str, rate_wpm: int, end_pause: bool
    ) -> tuple[npt.NDArray[np.int16], list[tuple[int, int]]]:
        """Synthesise `text`: samples at `self.sample_rate` and (char position, audio ms) per word event."""
        self._configure(voice, rate_wpm)
        # A NUL would end the C string early; swapping it for a space keeps every character position.
        encoded = text.replace("\x00", " ").encode("utf-8")
        flags = _CHARS_UTF8 | (_ENDPAUSE if end_pause else 0)
        self._job = job = _Job()
        code = self._lib.espeak_Synth(encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, flags, None, None)
        self._job = _Job()
        if job.error is not None:
            raise job.error
        if code != _EE_OK:
            raise RuntimeError(f"espeak_Synth failed ({code})")
        pcm = np.frombuffer(b"".join(job.blocks), dtype=np.int16)
        return pcm, job.words


# Process-wide state, the one deliberate exception to "no module-level singletons": espeak-ng itself is a
# process-global singleton, so two owners (two app instances, two test apps, a CLI next to a server) would
# share and corrupt the same C state whatever Python pretended. One worker thread owns the library; the lock
# only makes the lazy creation of that thread safe when several event loops (threads) ask for it at once.
# The library is created on first use, on the worker, so importing this module or building a handle costs
# nothing.
_worker_lock = threading.Lock()
_worker: ThreadPoolExecutor | None = None
_library: _Library | None = None  # touched only on the worker thread, which serialises all access


def _get_worker() -> ThreadPoolExecutor:
    global _worker
    with _worker_lock:
        if _worker is None:
            _worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="espeak-ng")
        return _worker


_pools: dict[int, ProcessPoolExecutor] = {}  # worker processes, by pool size


def _get_pool(processes: int) -> ProcessPoolExecutor:
    with _worker_lock:
        pool = _pools.get(processes)
        if pool is None:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
            pool = ProcessPoolExecutor(max_workers=processes, mp_context=context)
            _pools[processes] = pool
        return pool


def _get_library() -> _Library:
    global _library
    if _library is None:
        _library = _Library()
    return _library


def _is_trailing_punctuation(char: str) -> bool:
    return unicodedata.category(char).startswith("P")


def align_words(text: str, events: list[tuple[int, int]]) -> tuple[WordTiming, ...]:
    """Turn espeak word events, (0-based char position, audio ms), into strictly increasing word timings.

    espeak's start positions are reliable but its lengths are not ("Smith's" is reported as 5 characters,
    "well-known" as "well"), and numbers, abbreviations and symbols are spoken as several words that each
    get an event, some pointing at the same character or at the space after the token. So only the starts
    are used: an event is kept when it moves strictly forward in both text and audio and starts on a
    non-space character; a word then runs to the next space or the next kept start, minus trailing
    punctuation.
    """
    starts: list[tuple[int, float]] = []
    for position, audio_ms in events:
        if not 0 <= position < len(text) or text[position].isspace():
            continue
        ms = float(audio_ms)
        if starts and (position <= starts[-1][0] or ms <= starts[-1][1]):
            continue
        starts.append((position, ms))
    words: list[WordTiming] = []
    for k, (start, ms) in enumerate(starts):
        limit = starts[k + 1][0] if k + 1 < len(starts) else len(text)
        end = start + 1
        while end < limit and not text[end].isspace():
            end += 1
        # Keep a lone symbol ("@", "-") rather than strip the word to nothing.
        while end - 1 > start and _is_trailing_punctuation(text[end - 1]):
            end -= 1
        words.append(WordTiming(char_start=start, char_end=end, audio_ms=ms))
    return tuple(words)


def _synthesize_blocking(text: str, voice: str, rate_wpm: int, end_pause: bool, sample_rate: int) -> Synthesis:
    library = _get_library()
    raw, events = library.synth(text, voice, rate_wpm, end_pause)
    # The resampler has no delay, so espeak's ms positions hold unchanged in the resampled audio.
    pcm = resample(raw, library.sample_rate, sample_rate)
    duration_ms = pcm.shape[0] * 1000.0 / sample_rate
    words = tuple(w for w in align_words(text, events) if w.audio_ms < duration_ms)
    return Synthesis(text=text, pcm=pcm, sample_rate=sample_rate, words=words)


_RawWords = list[tuple[int, int, float, float | None]]


def _synthesize_timed(
    text: str, voice: str, rate_wpm: int, end_pause: bool, sample_rate: int
) -> tuple[Synthesis, float]:
    """`_synthesize_blocking` on the worker thread, with when the job started (`time.perf_counter`)."""
    started = time.perf_counter()
    return _synthesize_blocking(text, voice, rate_wpm, end_pause, sample_rate), started


def _synthesize_plain(
    text: str, voice: str, rate_wpm: int, end_pause: bool, sample_rate: int
) -> tuple[npt.NDArray[np.int16], _RawWords, float]:
    """`_synthesize_blocking` in a pool process, as plain data (it crosses a process boundary), with its start.

    `time.perf_counter` is CLOCK_MONOTONIC on Linux, one clock for every process, so the start can be compared
    with the submitting process's clock.
    """
    started = time.perf_counter()
    synthesis = _synthesize_blocking(text, voice, rate_wpm, end_pause, sample_rate)
    words = [(w.char_start, w.char_end, w.audio_ms, w.audio_end_ms) for w in synthesis.words]
    return synthesis.pcm, words, started


def _rebuild(text: str, pcm: npt.NDArray[np.int16], sample_rate: int, words: _RawWords) -> Synthesis:
    # Synthesis finds the word ends again (tens of ms for a minute of speech): called off the event loop.
    timings = tuple(WordTiming(a, b, ms, end) for a, b, ms, end in words)
    return Synthesis(text=text, pcm=pcm, sample_rate=sample_rate, words=timings)


class EspeakTts:
    """A cheap handle on the process-wide espeak-ng engine with its own voice and speed.

    Handles can be created freely (per app, per call); each request applies its voice and rate on the shared
    worker thread before synthesising, so handles never see each other's settings.
    """

    def __init__(
        self,
        voice: str = "en-us",
        rate_wpm: int = 175,
        *,
        end_pause: bool = True,
        sample_rate: int = 8000,
        processes: int = 0,
        on_wait: Callable[[float], None] | None = None,
    ) -> None:
        if processes < 0:
            raise ValueError(f"processes must be >= 0, got {processes}")
        if not RATE_MIN_WPM <= rate_wpm <= RATE_MAX_WPM:
            raise ValueError(f"rate_wpm must be in [{RATE_MIN_WPM}, {RATE_MAX_WPM}], got {rate_wpm}")
        if not voice or "\x00" in voice:
            raise ValueError("voice must be a non-empty espeak-ng voice name")
        self.voice = voice
        self.rate_wpm = rate_wpm
        # espeak drops the pause after the last sentence unless asked (speak_lib.h, espeakENDPAUSE); when a
        # reply is synthesised sentence by sentence, that pause is what keeps the sentences from running
        # together.
        self.end_pause = end_pause
        self.sample_rate = sample_rate
        # 0: the in-process worker thread; N: a pool of N worker processes (TTS_ESPEAK_PROCESSES).
        self.processes = processes
        # Called with each sentence's queue wait in seconds (submitted -> started), for the bench and metrics.
        self.on_wait = on_wait

    async def synthesize(self, text: str) -> Synthesis:
        """Synthesise `text` off the event loop; cancelling the caller discards the result."""
        if not text.strip():
            silence = np.zeros(0, dtype=np.int16)
            return Synthesis(text=text, pcm=silence, sample_rate=self.sample_rate, words=())
        loop = asyncio.get_running_loop()
        args = (text, self.voice, self.rate_wpm, self.end_pause, self.sample_rate)
        submitted = time.perf_counter()
        with map_vendor_errors("espeak"):
            # If the awaiting task is cancelled, a job that has not started is dropped; one that has runs to
            # its end (a few ms) and its result is thrown away.
            if not self.processes:
                synthesis, started = await loop.run_in_executor(_get_worker(), _synthesize_timed, *args)
            else:
                pcm, words, started = await loop.run_in_executor(_get_pool(self.processes), _synthesize_plain, *args)
                synthesis = await asyncio.to_thread(_rebuild, text, pcm, self.sample_rate, words)
        if self.on_wait is not None:
            self.on_wait(max(0.0, started - submitted))
        return synthesis

    def paced(self, factor: float) -> EspeakTts:
        """The same voice at `factor` x this handle's words per minute (within espeak's range)."""
        rate = min(max(round(self.rate_wpm * factor), RATE_MIN_WPM), RATE_MAX_WPM)
        return EspeakTts(self.voice, rate, end_pause=self.end_pause, sample_rate=self.sample_rate,
                         processes=self.processes, on_wait=self.on_wait)

    async def aclose(self) -> None:
        """Nothing to release: the engine (thread or pool) belongs to the process and exits with it."""
