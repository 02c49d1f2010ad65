"""The call recording format, version 1: JSON Lines in compressed frames. Reading and writing, no policy.

Why this shape:
- **JSON Lines** because every tool reads it (`zstdcat call.jsonl.zst | jq`), a line is one event, and a
  provider's frames are JSON already: a recorded frame is the exact text that crossed the socket.
- **One compressed frame per flush.** Concatenated zstd frames are one valid zstd stream (RFC 8878 3.1), as
  concatenated gzip members are one gzip file (RFC 1952 2.2), so the writer closes a frame every second or so
  and a crash, a kill -9 or a full disk loses at most the frame being written; `read_recording` reads every
  complete frame and says whether the tail was cut. Base64 audio in JSON compresses back to about its raw
  size, so a 5-minute call is a few MB.
- **zstd, not gzip, for what the recorder writes** (`.jsonl.zst`): measured here on a recorded call, zstd at
  level 1 compresses a call-second in 0.04 ms against gzip level 1's 0.42 ms, to a slightly smaller file
  (ratio 0.395 against 0.420); with gzip, compression alone cost about 5% of a call's CPU. The reader takes
  both, frame by frame (by their magic numbers), and `write_recording` writes gzip to a `.jsonl.gz` path, so
  gzip recordings (the test fixtures) stay readable and writable.

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

import zstandard

FORMAT = "bargein-call"
VERSION = 1
SUFFIX = ".jsonl.zst"  # what the recorder writes
SUFFIXES = (".jsonl.zst", ".jsonl.gz")  # what a reader looks for
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_GZIP_MAGIC = b"\x1f\x8b"


class RecordingError(Exception):
    """The file is not a bargein recording this build can read."""


def encode_member(lines: Iterable[str], compresslevel: int | None = None, codec: str = "zstd") -> bytes:
    """One complete compressed frame ("zstd", or a "gzip" member) holding `lines` (each without its newline)."""
    # backslashreplace: a lone surrogate (only possible inside a JSON string, e.g. from an LLM's "\ud800"
    # escape) is written as that same JSON escape, so the line stays valid UTF-8 and valid JSON.
    payload = "".join(line + "\n" for line in lines).encode("utf-8", "backslashreplace")
    if codec == "gzip":
        # mtime=0: the same lines give the same bytes, so a re-recorded fixture diffs only where it changed.
        return gzip.compress(payload, compresslevel=6 if compresslevel is None else compresslevel, mtime=0)
    return zstandard.ZstdCompressor(level=1 if compresslevel is None else compresslevel).compress(payload)


def codec_for(path: str | Path) -> str:
    return "gzip" if str(path).endswith(".gz") else "zstd"


def _members(data: bytes) -> tuple[bytes, bool]:
    """Decompress concatenated gzip members and zstd frames; returns (every complete one's text, truncated?)."""
    out = io.BytesIO()
    pos = 0
    while pos < len(data):
        # One frame's decompressor, zlib-style: `decompress`, then `eof` and `unused_data`.
        d: Any
        if data.startswith(_ZSTD_MAGIC, pos):
            d = zstandard.ZstdDecompressor().decompressobj()
        elif data.startswith(_GZIP_MAGIC, pos):
            d = zlib.decompressobj(wbits=31)
        else:
            return out.getvalue(), True  # not a frame start: the file was cut (or overwritten) here
        try:
            chunk = d.decompress(data[pos:])
        except (zlib.error, zstandard.ZstdError):
            return out.getvalue(), True
        if not d.eof:
            return out.getvalue(), True  # the last member was being written when the file was cut
        out.write(chunk)
        consumed = len(data) - pos - len(d.unused_data)
        pos += consumed
    return out.getvalue(), False


def decompress(data: bytes) -> bytes:
    """A recording file's bytes, uncompressed (every complete frame): what `zstdcat` / `zcat` would print."""
    return _members(data)[0]


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
    Path(path).write_bytes(encode_member(body, codec=codec_for(path)))


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
    """Where the recorder writes a call's recording."""
    return Path(record_dir) / recording_name(call_id)


def find_recording(record_dir: str | Path, call_id: str) -> Path | None:
    """A call's recording in `record_dir` (as the recorder names it, or the same name as gzip), if there is one."""
    path = recording_path(record_dir, call_id)
    for candidate in (path, path.with_name(path.name[: -len(SUFFIX)] + ".jsonl.gz")):
        if candidate.is_file():
            return candidate
    return None
