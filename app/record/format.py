"""The call recording format, version 1: gzip-framed JSON Lines. Reading and writing, no policy.

Why this shape:
- **JSON Lines** because every tool reads it (`zcat call.jsonl.gz | jq`), a line is one event, and a provider's
  frames are JSON already: a recorded frame is the exact text that crossed the socket.
- **gzip, one member per flush.** Concatenated gzip members are one valid gzip file (RFC 1952 2.2), so the
  writer closes a member every second or so and a crash, a kill -9 or a full disk loses at most the member
  being written; `read_recording` reads every complete member and says whether the tail was cut. Base64 audio
  in JSON compresses back to about its raw size, so a 5-minute call is a few MB.

Lines, in order:
1. `{"type": "header", "format": "bargein-call", "version": 1, ...}`: `call_id`, `stream_id` (the first
   stream's), `provider`, `started_at` (wall-clock epoch seconds of t = 0, the stream's WebSocket upgrade),
   `build` (the server's version), `audio` ({"encoding": "audio/x-mulaw", "sample_rate": 8000}), `settings`
   (every setting that shapes decisions: never a secret, URLs without user:password@ or query),
   `secrets_omitted` (the names of the settings left out) and `redacted` (what RECORD_REDACT left out: a list
   of "audio", "text").
2. One line per event of app/call/events.py: `{"type": kind, "t": seconds since t = 0, ...}`, `t` on the
   call's clock, rounded to microseconds. `ws_in` / `ws_out` hold each WebSocket text frame as it was received
   or sent, with the secrets it carried replaced by "[redacted]" (app/record/redact.py).
3. `{"type": "stream", "t": ..., "stream_id": ...}` before the events of each further stream of the call (a
   reconnect), on the same clock; `{"type": "capped", "t": ..., "max_mb": ...}` where RECORD_MAX_MB stopped
   the events (each stream's `call_end` and `record` still follow).
4. `{"type": "record", "t": ..., "record": {...}}`: the call record as the server kept it, when a stream
   ended (after a reconnect there is one per stream; the last is the call's). A file cut short by a crash
   has no such line at its end.

A reader ignores types it does not know (newer writers may add some) and fields it does not know; a file whose
major `version` is newer than `VERSION` is refused.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "bargein-call"
VERSION = 1
SUFFIX = ".jsonl.gz"


class RecordingError(Exception):
    """The file is not a bargein recording this build can read."""


def encode_member(lines: Iterable[str], compresslevel: int = 6) -> bytes:
    """One complete gzip member holding `lines` (each without its newline)."""
    # backslashreplace: a lone surrogate (only possible inside a JSON string, e.g. from an LLM's "\ud800"
    # escape) is written as that same JSON escape, so the line stays valid UTF-8 and valid JSON.
    payload = "".join(line + "\n" for line in lines).encode("utf-8", "backslashreplace")
    # mtime=0: the same lines give the same bytes, so a re-recorded fixture diffs only where it changed.
    return gzip.compress(payload, compresslevel=compresslevel, mtime=0)


def _members(data: bytes) -> tuple[bytes, bool]:
    """Decompress concatenated gzip members; returns (the text of every complete member, truncated?)."""
    out = io.BytesIO()
    pos = 0
    while pos < len(data):
        d = zlib.decompressobj(wbits=31)  # one gzip member
        try:
            chunk = d.decompress(data[pos:])
        except zlib.error:
            return out.getvalue(), True
        if not d.eof:
            return out.getvalue(), True  # the last member was being written when the file was cut
        out.write(chunk)
        consumed = len(data) - pos - len(d.unused_data)
        pos += consumed
    return out.getvalue(), False


@dataclass
class Recording:
    path: Path | None
    header: dict[str, Any]
    lines: list[dict[str, Any]] = field(default_factory=list)  # the events, in order, as dicts
    record: dict[str, Any] | None = None  # the final call record (None: the file was cut before the end)
    truncated: bool = False  # the last gzip member was incomplete

    def of_type(self, *types: str) -> Iterator[dict[str, Any]]:
        wanted = set(types)
        return (line for line in self.lines if line.get("type") in wanted)

    @property
    def duration_s(self) -> float:
        return float(self.lines[-1]["t"]) if self.lines else 0.0


def parse_recording(data: bytes, path: Path | None = None) -> Recording:
    text, truncated = _members(data)
    header: dict[str, Any] | None = None
    lines: list[dict[str, Any]] = []
    record: dict[str, Any] | None = None
    raw_lines = text.decode("utf-8", errors="replace").splitlines()
    for number, raw in enumerate(raw_lines, 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError:
            if number == len(raw_lines):
                truncated = True  # a torn last line: only possible if a member was written partially
                break
            raise RecordingError(f"line {number} is not JSON") from None
        if not isinstance(obj, dict):
            raise RecordingError(f"line {number} is not a JSON object")
        if header is None:
            if obj.get("type") != "header" or obj.get("format") != FORMAT:
                raise RecordingError("not a bargein call recording (no header line)")
            version = obj.get("version")
            if not isinstance(version, int) or version > VERSION:
                raise RecordingError(f"recording format version {version!r}; this build reads up to {VERSION}")
            header = obj
        elif obj.get("type") == "record":
            record = obj.get("record")
        else:
            lines.append(obj)
    if header is None:
        raise RecordingError("empty recording")
    return Recording(path, header, lines, record, truncated)


def read_recording(path: str | Path) -> Recording:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise RecordingError(f"cannot read {p}: {exc.strerror or exc}") from None
    return parse_recording(data, p)


def dumps_line(obj: dict[str, Any]) -> str:
    """One line of the format: compact JSON, non-ASCII kept (transcripts), no NaN (it is not JSON)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def write_recording(path: str | Path, header: dict[str, Any], lines: Iterable[dict[str, Any]],
                    record: dict[str, Any] | None = None) -> None:
    """Write a whole recording at once (fixtures, `replay --update`); the live recorder streams instead."""
    head = {"type": "header", "format": FORMAT, "version": VERSION, **header}
    body = [dumps_line(head)] + [dumps_line(line) for line in lines]
    if record is not None:
        body.append(dumps_line({"type": "record", "t": 0.0, "record": record}))
    Path(path).write_bytes(encode_member(body))


_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


def recording_name(call_id: str) -> str:
    """The file name of a call's recording: the call id when it is a plain name, else a safe name plus a hash.

    Call ids come from the provider (Twilio `CA` + 32 hex, Plivo a UUID) but cross the wire, so nothing in them
    may choose a directory or hide a file.
    """
    import hashlib

    safe = "".join(ch for ch in call_id if ch in _SAFE).strip(".")[:100]
    if safe != call_id or not safe:
        safe = f"{safe or 'call'}-{hashlib.sha256(call_id.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}"
    return safe + SUFFIX


def recording_path(record_dir: str | Path, call_id: str) -> Path:
    """Where the recorder writes (and `GET /calls/{id}/report` looks for) a call's recording."""
    return Path(record_dir) / recording_name(call_id)
