"""The live recorder: every call's events to RECORD_DIR/<call id>.jsonl.zst, written by one thread.

Theory of operation. `Recorder.observe` is a CallDeps observer: when a stream's `start` is accepted it
subscribes the call's event stream (app/call/events.py). On the event loop each event becomes one line of
text, and nothing more happens there: a wire frame costs one escape of its text and one string format
(about 1 us for a 20 ms media frame, see tests/record/test_recorder.py), the line goes onto the call's deque,
and the call's bytes are counted. One writer thread, shared by every call, wakes once a second (sooner when
a call has 64 KB waiting or a stream ended), takes each call's lines, compresses them into one zstd frame
(app/record/format.py) and appends it to the call's file. Opening, creating the directory, writing, fsync and
every error therefore happen off the loop; the loop never waits for the writer (deque appends and pops are
atomic, so the two sides share nothing else but a few flags).

Files. A call's first stream creates the file with the header line; a stream that reconnects to the same call
(the registry hands it the same CallRecord) appends a `stream` line and its own events, on the same clock. The
file is closed, after fsync, when a stream ends, with the call record as its last line. A file that exists for
a new call (a restart, a reused id) is moved aside to `<name>.<n>.jsonl.zst` first. The recorder remembers a
call as long as the registry would (CALL_RECORDS_TTL_S, CALL_RECORDS_MAX), so its memory is bounded.

Failures never reach the call: an error opening or writing a call's file (a missing directory, a full disk) is
logged once for that call, and its recording stops. RECORD_MAX_MB caps a file: past it, a `capped` line is
written, events stop, and only the call record still follows.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from app.call.events import CallClosed, CallEvent, WireReceived, WireSent, to_dict
from app.logsafe import safe
from app.record.format import FORMAT, SUFFIX, VERSION, dumps_line, encode_member, recording_path
from app.record.redact import (
    InboundRedactor,
    blank_payload,
    is_secret_name,
    public_settings,
    redact_event_text,
    redact_record_text,
    scrub,
)

if TYPE_CHECKING:
    from app.call.session import CallSession
    from app.settings import Settings

logger = logging.getLogger(__name__)

FLUSH_S = 1.0  # a frame per call at least this often: what a crash can lose
MEMBER_BYTES = 64 * 1024  # or as soon as a call has this much waiting
# zstd level 1 (see app/record/format.py for why zstd): measured on a recorded call, level 3 (zstd's default)
# costs 1.5 times the CPU for a file 0.5% smaller; base64 audio is most of the bytes.
COMPRESS_LEVEL = 1
_KEPT_PAST_CAP = ('{"type":"call_end"', '{"type":"stream"', '{"type":"record"')
_MEMBER_LINES = 150  # the writer's stand-in for MEMBER_BYTES: ~430-byte media lines

# The audio inside the recorded frames' payloads, per protocol (a plain-PCM client's is not the carriers').
_WIRE_AUDIO: dict[str, dict[str, Any]] = {
    "twilio": {"encoding": "audio/x-mulaw", "sample_rate": 8000},
    "plivo": {"encoding": "audio/x-mulaw", "sample_rate": 8000},
}

Opener = Callable[[Path], BinaryIO]


def _open_append(path: Path) -> BinaryIO:
    return open(path, "ab", buffering=0)  # noqa: SIM115 - the writer closes it when the stream ends


@dataclass(eq=False)
class _CallFile:
    """One call's recording, shared by the loop (which appends lines) and the writer thread."""

    call_id: str
    path: Path
    record: Any  # the registry's CallRecord: the same object again means a reconnect of this call
    t0: float
    log_extra: dict[str, str]
    pending: deque[str] = field(default_factory=deque)
    pending_bytes: int = 0  # loop side: bytes queued since the writer was last woken for this call
    opens: int = 0  # streams started (loop)
    closes: int = 0  # streams ended (loop); the writer closes the file when it sees opens == closes
    last_t: float = 0.0
    secrets: list[str] = field(default_factory=list)  # values to scrub from every non-media line
    # Set by the writer thread, read by the loop:
    stopped: bool = False  # an error: nothing more is recorded for this call
    capped: bool = False  # RECORD_MAX_MB reached: only the call record is still written
    # Writer thread only:
    file: BinaryIO | None = None
    created: bool = False
    written: int = 0
    last_flush: float = 0.0


class Recorder:
    """Records every call to `record_dir`; `observe` goes into CallDeps.observers, `start`/`stop` bracket the app."""

    def __init__(
        self,
        record_dir: str | Path,
        settings: Settings,
        *,
        build: str = "unknown",
        redact: frozenset[str] = frozenset(),
        max_bytes: int = 0,
        flush_s: float = FLUSH_S,
        open_file: Opener = _open_append,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.record_dir = Path(record_dir)
        self.redact = redact
        self.max_bytes = max_bytes
        self._flush_s = flush_s
        self._open_file = open_file
        self._monotonic = monotonic  # the writer's own pacing; never a call's clock
        self._build = build
        dumped = settings.model_dump()
        self._settings, self._omitted = public_settings(dumped)
        # The second line of defence: these values are replaced wherever they appear in a non-media line.
        self._secrets = sorted(
            (v for k, v in dumped.items() if is_secret_name(k) and isinstance(v, str) and len(v) >= 6),
            key=len, reverse=True,
        )
        for pair in settings.twilio_webhook_keys.split(","):  # key_id=secret: the secret alone too
            secret = pair.partition("=")[2].strip()
            if len(secret) >= 6:
                self._secrets.append(secret)
        self._records_max = settings.call_records_max
        self._records_ttl_s = settings.call_records_ttl_s
        self._calls: dict[str, _CallFile] = {}  # loop side: every call the registry would still know
        self._ended: OrderedDict[str, float] = OrderedDict()  # call id -> clock time its last stream ended
        self._registered: deque[_CallFile] = deque()  # loop -> writer: calls with a new stream
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings: Settings, build: str = "unknown") -> Recorder:
        return cls(settings.record_dir, settings, build=build, redact=settings.record_redact_items,
                   max_bytes=int(settings.record_max_mb * 1024 * 1024))

    # -- the writer thread's life ----------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Write what is waiting, close every file (blocking: call it off the loop, e.g. asyncio.to_thread)."""
        thread = self._thread
        if thread is None:
            return
        self._stopping = True
        self._wake.set()
        thread.join(timeout_s)
        self._thread = None

    # -- the loop side ---------------------------------------------------------------------------------
    def observe(self, session: CallSession) -> None:
        """CallDeps observer: record this stream (its `start` was just accepted, so session.record is set)."""
        record = session.record
        if record is None:
            return
        clock = session.deps.clock
        now = clock.now()
        self._forget_old(now)
        call_id = record.call_id
        call = self._calls.get(call_id)
        stream_id = session.stream_id or ""
        if call is not None and call.record is record and call.opens == call.closes:
            # A reconnect: the same call, on the same clock and in the same file.
            self._ended.pop(call_id, None)
            call.pending.append(dumps_line({"type": "stream", "t": round(session.opened_at - call.t0, 6),
                                            "stream_id": stream_id}))
        else:
            call = _CallFile(call_id, recording_path(self.record_dir, call_id), record, session.opened_at,
                             {"call_id": safe(call_id, 64, quote=False), "provider": session.protocol.name})
            self._calls[call_id] = call
            self._ended.pop(call_id, None)
            started_at = session.deps.wall() - (now - session.opened_at)
            header = {
                "type": "header", "format": FORMAT, "version": VERSION,
                "call_id": call_id, "stream_id": stream_id, "provider": session.protocol.name,
                "started_at": round(started_at, 6), "build": self._build,
                "audio": _WIRE_AUDIO.get(session.protocol.name, {"encoding": "unknown"}),
                "settings": self._settings, "secrets_omitted": self._omitted, "redacted": sorted(self.redact),
            }
            call.pending.append(dumps_line(header))
        call.opens += 1
        session.events.subscribe(self._subscriber(call, session))
        self._registered.append(call)
        self._wake.set()

    def _subscriber(self, call: _CallFile, session: CallSession) -> Callable[[CallEvent], None]:
        t0 = call.t0
        drop_audio = "audio" in self.redact
        drop_text = "text" in self.redact
        secrets = call.secrets
        secrets.extend(s for s in self._secrets if s not in secrets)  # once per call, not once per stream
        pending = call.pending
        wake = self._wake
        inbound = InboundRedactor(drop_audio)

        def on_event(event: CallEvent) -> None:
            if call.stopped or call.capped:
                if isinstance(event, CallClosed):  # the stream's end and its record are written even past the cap
                    pending.append(dumps_line({"type": "call_end", "t": round(event.t - t0, 6),
                                               "reason": event.reason}))
                    self._end_stream(call, session, event.t - t0)
                return
            t = event.t - t0
            if isinstance(event, WireReceived):
                text = event.text
                # Secrets ride only in a start (Twilio, Plivo) or in extra_headers (Plivo, on every frame).
                if drop_audio or "start" in text or "extra_headers" in text:
                    text, found = inbound.redact(text)
                    if found:
                        secrets.extend(s for s in found if s not in secrets)
                line = f'{{"type":"ws_in","t":{t:.6f},"text":{encode_basestring(text)}}}'
            elif isinstance(event, WireSent):
                text = blank_payload(event.text) if drop_text else event.text
                line = f'{{"type":"ws_out","t":{t:.6f},"text":{encode_basestring(text)}}}'
            else:
                data = to_dict(event)
                data["t"] = round(t, 6)
                if drop_text:
                    data = redact_event_text(data)
                line = scrub(dumps_line(data), secrets)
            call.last_t = t
            pending.append(line)
            if isinstance(event, CallClosed):
                self._end_stream(call, session, t)
                return
            call.pending_bytes += len(line)
            if call.pending_bytes > MEMBER_BYTES:
                call.pending_bytes = 0
                wake.set()

        return on_event

    def _end_stream(self, call: _CallFile, session: CallSession, t: float) -> None:
        record = session.record.to_json() if session.record is not None else {}
        if "text" in self.redact:
            record = redact_record_text(record)
        call.pending.append(scrub(dumps_line({"type": "record", "t": round(t, 6), "record": record}), call.secrets))
        call.closes += 1
        if call.closes == call.opens:
            self._ended[call.call_id] = session.deps.clock.now()
            self._ended.move_to_end(call.call_id)
        self._wake.set()

    def _forget_old(self, now: float) -> None:
        # As the registry forgets a call (TTL or cap), so does the recorder: a stream after that is a new call.
        while self._ended:
            call_id, ended = next(iter(self._ended.items()))
            if now - ended <= self._records_ttl_s and len(self._ended) <= self._records_max:
                break
            del self._ended[call_id]
            self._calls.pop(call_id, None)

    # -- the writer thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        live: dict[int, _CallFile] = {}
        while True:
            self._wake.wait(self._flush_s)
            self._wake.clear()
            stopping = self._stopping
            while self._registered:
                call = self._registered.popleft()
                live.setdefault(id(call), call)
            now = self._monotonic()
            for key, call in list(live.items()):
                ended = call.opens == call.closes  # read before taking the lines: all of the stream's are in
                due = ended or stopping or len(call.pending) >= _MEMBER_LINES or now - call.last_flush >= self._flush_s
                try:
                    if due:
                        self._write_pending(call, now)
                    if ended or stopping:
                        self._close(call, sync=True)
                        del live[key]
                except Exception:  # a bug here must not stop every other call's recording
                    logger.exception("recording stopped: unexpected error", extra=call.log_extra)
                    call.stopped = True
                    call.pending.clear()
                    self._close(call, sync=False)
                    live.pop(key, None)
            if stopping:
                return

    def _write_pending(self, call: _CallFile, now: float) -> None:
        pending = call.pending
        lines: list[str] = []
        while pending:
            lines.append(pending.popleft())
        call.last_flush = now
        if call.capped:  # lines the loop queued before it saw the cap
            lines = [line for line in lines if line.startswith(_KEPT_PAST_CAP)]
        if not lines or call.stopped:
            return
        try:
            if call.file is None:
                call.file = self._open(call)
            member = encode_member(lines, compresslevel=COMPRESS_LEVEL)
            if self.max_bytes and call.written + len(member) > self.max_bytes and not call.capped:
                member = self._cap(call, lines)
            call.file.write(member)
            call.written += len(member)
        except (OSError, ValueError) as exc:
            # Once per call: the call goes on, only its recording stops (and its memory is let go).
            call.stopped = True
            pending.clear()
            logger.warning("recording stopped: cannot write %s (%s); the call goes on unrecorded",
                           safe(str(call.path), 200), _describe(exc), extra=call.log_extra)
            self._close(call, sync=False)

    def _cap(self, call: _CallFile, lines: list[str]) -> bytes:
        """RECORD_MAX_MB reached: the member that says so, in place of `lines` (their stream ends and records stay)."""
        call.capped = True
        first_t = json.loads(lines[0]).get("t", call.last_t)
        cap = {"type": "capped", "t": first_t, "max_mb": round(self.max_bytes / 1048576, 3),
               "reason": "RECORD_MAX_MB reached: no more events; each stream's end and the call record follow"}
        kept = [line for line in lines if line.startswith(_KEPT_PAST_CAP)]
        logger.warning("recording capped at RECORD_MAX_MB (%g MB); the call goes on unrecorded",
                       self.max_bytes / 1048576, extra=call.log_extra)
        return encode_member([dumps_line(cap), *kept], compresslevel=COMPRESS_LEVEL)

    def _open(self, call: _CallFile) -> BinaryIO:
        if not call.created:
            call.path.parent.mkdir(parents=True, exist_ok=True)
            if call.path.exists() or call.path.is_symlink():
                _move_aside(call.path)
            call.created = True
        return self._open_file(call.path)

    def _close(self, call: _CallFile, *, sync: bool) -> None:
        f, call.file = call.file, None
        if f is None:
            return
        try:
            if sync:
                os.fsync(f.fileno())  # a finished stream survives a power cut; members in between reach the OS
        except (OSError, ValueError):
            pass
        finally:
            try:
                f.close()
            except OSError as exc:
                if not call.stopped:
                    call.stopped = True
                    logger.warning("recording stopped: cannot close %s (%s)", safe(str(call.path), 200),
                                   _describe(exc), extra=call.log_extra)


def _move_aside(path: Path) -> None:
    """Rename an existing recording to the first free `<name>.<n>.jsonl.zst`, so a new call never overwrites it."""
    stem = path.name[: -len(SUFFIX)] if path.name.endswith(SUFFIX) else path.name
    n = 1
    while True:
        aside = path.with_name(f"{stem}.{n}{SUFFIX}")
        if not aside.exists():
            path.rename(aside)
            return
        n += 1


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__
