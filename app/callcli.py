"""`bargein call`: place one call through the provider-edge emulator and keep what the caller heard.

    bargein call [URL] --say clip.wav [--at SECONDS] -o heard.wav [--provider twilio|plivo]

The emulator (app/edge/emulator.py) is the carrier's edge: it POSTs the answer webhook (signed with the
provider's auth token when there is one: --auth-token, else TWILIO_AUTH_TOKEN / PLIVO_AUTH_TOKEN from the
environment or .env), follows the returned TwiML / Plivo XML to the stream, plays the agent's audio on its own
clock, acknowledges marks as the carrier would and obeys clears. The clip starts --at seconds after the
greeting's first audio played. The output WAV is what the caller heard, on the call's timeline (silence where
nothing played; audio thrown away by a clear is not in it), 8 kHz mono, or with --stereo the caller's clip on
the right channel.

Then it prints what happened: the server's record of the call (GET /calls/{id}, with --admin-token or
ADMIN_TOKEN when auth is on) or, if that is refused, what the emulator saw; and the report URL when the server
records calls (RECORD_DIR).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import wave
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

# numpy, httpx, the emulator and the settings are imported when the command runs, not when `bargein` builds
# its parser (add_arguments): `bargein --help` stays fast.
if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from app.edge.emulator import EmulatedCall
    from app.settings import Settings

    Pcm16 = npt.NDArray[np.int16]

DEFAULT_URL = "http://127.0.0.1:8080"
SAMPLE_RATE = 8000  # the emulated caller leg: mu-law at 8 kHz (app/edge/playout.py)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("url", nargs="?", default=DEFAULT_URL, metavar="URL",
                   help=f"the server's base URL (default: {DEFAULT_URL})")
    p.add_argument("--say", required=True, metavar="WAV", help="what the caller says: a 16-bit PCM WAV, any rate")
    p.add_argument("--at", type=float, default=2.0, metavar="SECONDS",
                   help="start speaking this long after the greeting starts playing (default: 2.0)")
    p.add_argument("-o", "--output", default="heard.wav", metavar="WAV",
                   help="where to write what the caller heard (default: heard.wav)")
    p.add_argument("--provider", choices=["twilio", "plivo"], default="twilio", help="carrier to emulate")
    p.add_argument("--listen", type=float, default=4.0, metavar="SECONDS",
                   help="stay on the line this long after the clip, to hear the answer (default: 4.0)")
    p.add_argument("--stereo", action="store_true", help="write the caller's clip on the right channel too")
    p.add_argument("--public-url", default=None, metavar="URL",
                   help="the server's PUBLIC_URL when it differs from URL (the webhook is signed over it)")
    p.add_argument("--auth-token", default=None, metavar="TOKEN",
                   help="sign the webhook with this provider auth token (default: TWILIO_AUTH_TOKEN or "
                        "PLIVO_AUTH_TOKEN from the environment / .env; none: unsigned)")
    p.add_argument("--admin-token", default=None, metavar="TOKEN",
                   help="for GET /calls/{id} when auth is on (default: ADMIN_TOKEN from the environment / .env)")
    p.add_argument("--timeout", type=float, default=15.0, metavar="SECONDS",
                   help="give up if the greeting has not started playing by then (default: 15)")


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Place the call; 0 when it went through, 1 when the server refused it or nothing was heard."""
    import httpx

    from app.edge.emulator import CallRejected

    out = out or sys.stdout
    try:
        clip = read_wav(Path(args.say))
    except (OSError, ValueError, wave.Error) as exc:
        print(f"bargein call: cannot read --say {args.say}: {exc}", file=sys.stderr)
        return 2
    settings = _settings()
    provider = args.provider
    auth_token = args.auth_token
    if auth_token is None and settings is not None:
        auth_token = (settings.twilio_auth_token if provider == "twilio" else settings.plivo_auth_token) or None
    admin_token = args.admin_token if args.admin_token is not None else (settings.admin_token if settings else "")
    try:
        return asyncio.run(_call(args, clip, auth_token, admin_token, out))
    except CallRejected as exc:
        print(f"bargein call: the server refused the call: {exc}", file=sys.stderr)
        return 1
    except (httpx.HTTPError, OSError) as exc:
        print(f"bargein call: cannot reach {args.url}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _settings() -> Settings | None:
    from app.settings import SettingsError, load_settings

    # The same environment / .env the server reads, for its tokens; a setting the server would refuse only
    # costs us the defaults (the flags still work).
    try:
        return load_settings()
    except SettingsError as exc:
        print(f"bargein call: ignoring the environment's settings ({exc})", file=sys.stderr)
        return None


def read_wav(path: Path) -> Pcm16:
    """A 16-bit PCM WAV as 8 kHz mono int16 (channels averaged, resampled)."""
    import numpy as np

    from providers.resample import resample

    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError("want 16-bit PCM")
        rate, channels = w.getframerate(), w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1).round().astype(np.int16)
    return resample(data, rate, SAMPLE_RATE) if rate != SAMPLE_RATE else data


async def _call(args: argparse.Namespace, clip: Pcm16, auth_token: str | None, admin_token: str,
                out: TextIO) -> int:
    import numpy as np

    from app.edge.emulator import EmulatedCall

    server = args.url.rstrip("/")
    call = EmulatedCall(args.provider, server, public_url=args.public_url or server, auth_token=auth_token,
                        answer=True)
    async with call:
        t0 = call.started_at
        assert t0 is not None
        if not await _wait(lambda: call.first_audio_at is not None or call.closed, args.timeout):
            print(f"bargein call: no greeting within {args.timeout:g} s", file=sys.stderr)
        greeting = call.first_audio_at
        if greeting is None:
            print("bargein call: the agent never spoke; hanging up", file=sys.stderr)
            return 1
        await asyncio.sleep(max(0.0, greeting + args.at - time.monotonic()))  # the emulator's clock
        said_at = await call.send_audio(clip) if not call.closed else []
        await _wait(lambda: call.closed, args.listen)
    end = call.closed_at or t0
    heard = heard_timeline(call, t0, end)
    caller = np.zeros(len(heard), np.int16)
    if said_at:
        start = max(0, round((said_at[0] - 0.02 - t0) * SAMPLE_RATE))
        piece = clip[: max(0, len(caller) - start)]
        caller[start : start + len(piece)] = piece
    write_wav(Path(args.output), heard, caller if args.stereo else None)

    # Speech onset: the first 20 ms of the clip above SPEECH_DBFS (a clip may open with silence).
    spoke = said_at[0] - 0.02 + speech_onset_s(clip) if said_at else None
    summary = observed(call, t0, greeting, spoke)
    print(f"call {call.call_id} ({call.provider}) to {server}", file=out)
    for line in summary:
        print(f"  {line}", file=out)
    print(f"  heard {sum(s.samples for s in call.played_spans) / SAMPLE_RATE:.2f} s of agent audio "
          f"-> {args.output}", file=out)
    await _print_record(server, call.call_id, admin_token, out)
    return 0


async def _wait(predicate: Any, timeout_s: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.02)
    return True


SPEECH_DBFS = -45.0


def speech_onset_s(clip: Pcm16) -> float:
    """Where the clip's speech begins: the first 20 ms frame louder than SPEECH_DBFS (0 if none is)."""
    from app.audio import dbfs

    step = SAMPLE_RATE // 50
    for i in range(0, len(clip) - step + 1, step):
        if dbfs(clip[i : i + step]) > SPEECH_DBFS:
            return i / SAMPLE_RATE
    return 0.0


def heard_timeline(call: EmulatedCall, t0: float, end: float) -> Pcm16:
    """What the caller heard from `t0` to `end`, each played stretch at its time; silence elsewhere."""
    import numpy as np

    from app.audio import ulaw_to_pcm16

    received = call.received_audio()
    pcm = np.zeros(max(0, round((end - t0) * SAMPLE_RATE)), np.int16)
    for span in call.played_spans:
        at = max(0, round((span.start - t0) * SAMPLE_RATE))
        piece = ulaw_to_pcm16(received[span.first_byte : span.end_byte])[: max(0, len(pcm) - at)]
        pcm[at : at + len(piece)] = piece
    return pcm


def write_wav(path: Path, left: Pcm16, right: Pcm16 | None = None) -> None:
    import numpy as np

    frames = left if right is None else np.stack([left, right], axis=1).reshape(-1)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1 if right is None else 2)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(frames.astype("<i2").tobytes())


def observed(call: EmulatedCall, t0: float, greeting: float, spoke: float | None) -> list[str]:
    """What the emulator saw, times in seconds from the stream's start."""
    lines = [f"greeting started playing at +{greeting - t0:.3f} s"]
    if spoke is not None:
        lines.append(f"you started speaking at +{spoke - t0:.3f} s ({spoke - greeting:.2f} s into the greeting; "
                     f"first clip frame above {SPEECH_DBFS:g} dBFS)")
    for at in call.clears:
        since = f", {(at - spoke) * 1000:.0f} ms after you started speaking" if spoke is not None else ""
        lines.append(f"clear at +{at - t0:.3f} s{since}")
    if not call.clears:
        lines.append("no clear: the agent was never interrupted")
    cut = sum(1 for m in call.marks if m.cleared)
    lines.append(f"marks: {len(call.marks)} received, {len(call.acked_marks)} acknowledged, {cut} cut by a clear")
    dropped = sum(d.end_byte - d.first_byte for d in call.dropped) / SAMPLE_RATE
    if dropped:
        lines.append(f"agent audio dropped by clears before it played: {dropped:.2f} s")
    if call.violations:
        lines.append(f"protocol violations seen by the edge: {len(call.violations)}")
    lines.append(f"call ended by the {call.closed_by or 'caller'}" +
                 (f" (close code {call.close_code})" if call.close_code else ""))
    return lines


async def _print_record(server: str, call_id: str, admin_token: str, out: TextIO) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}
    async with httpx.AsyncClient(trust_env=False, timeout=10, headers=headers) as client:
        # The record is closed a moment after the socket: give it a few tries to show the end reason.
        record: dict[str, Any] | None = None
        status = 0
        for _ in range(25):
            response = await client.get(f"{server}/calls/{call_id}")
            status = response.status_code
            if status != 200:
                break
            record = response.json()
            if record.get("ended_at") is not None:
                break
            await asyncio.sleep(0.1)
        if record is None:
            why = "pass --admin-token or set ADMIN_TOKEN" if status == 401 else f"HTTP {status}"
            print(f"server record: not available ({why}); the lines above are what the emulator saw", file=out)
        else:
            print("server record (GET /calls/{id}):", file=out)
            print(json.dumps(record, indent=2), file=out)
        report = f"{server}/calls/{call_id}/report"
        if (await client.get(report)).status_code == 200:
            print(f"report: {report}", file=out)
