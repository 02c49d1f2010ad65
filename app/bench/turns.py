"""`bargein bench --mode turns`: the turn gap, edge to edge, on the embedded defaults.

A call per clip, one at a time, on each provider: the agent says "Hello.", then the caller (a read sentence
from the corpus) speaks and falls silent; the gap is from the end of the caller's speech on the send clock (the
frame holding the clip's last sample above -40 dBFS) to the first agent audio the edge receives after it,
behind the emulator's network (40 +/- 15 ms each way) unless `--no-network`.

The breakdown comes from the server's own metrics, as means over the same turns: the turn-end silence (a
setting), the recognizer (`bargein_stt_seconds`: the turn's end to its words) and the server's whole gap
(`bargein_turn_gap_seconds`: the caller's end of speech to the answer's first audio queued); what remains of
the server's gap is the LLM's first sentence and its synthesis, and what the edge adds on top is the network
and the playback pacing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
from collections.abc import Sequence
from typing import Literal, cast

import httpx
import numpy as np

from app.bench.common import ServerProcess
from app.bench.stats import wilson
from app.edge.emulator import EdgeEmulator
from app.edge.network import Network
from app.offline.corpus import load_clip, read_manifest
from app.settings import Settings
from providers.mulaw import Pcm16

LOUD = 10 ** (-40 / 20) * 32768  # -40 dBFS: the clip's speech has ended after its last sample above this
AUDIO_EVENTS = ("media", "playAudio")


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def one_turn(edge: EdgeEmulator, provider: Literal["twilio", "plivo"], pcm: Pcm16) -> tuple[float | None, bool]:
    """One call: the greeting, the caller's sentence, the answer. Returns (gap ms or None, talked over)."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > LOUD)
    async with edge.call(provider) as call:
        await call.wait_until(lambda: call.played_samples > 0 and call.buffered_samples == 0, 15)
        sent = await call.send_audio(pcm)
        speech_end = sent[min(int(loud[-1]) // 160, len(sent) - 1)] + 0.02
        await call.send_silence(4.0)
        after = [t for t, kind in call.received_events if kind in AUDIO_EVENTS and t > speech_end]
    return ((after[0] - speech_end) * 1000.0 if after else None), any(t < sent[-1] for t in after)


async def measure(calls: int, providers: Sequence[str], network: bool) -> int:
    clips = [c for c in read_manifest() if c.kind == "speech" and c.category == "read"][:calls]
    server = ServerProcess({"AGENT_GREETING": "Hello."})
    await server.start()
    gaps: list[float] = []
    talk_over = 0
    try:
        for provider in providers:
            edge_network = Network.cloud_to_carrier() if network else None
            async with EdgeEmulator(server.url, keep_audio=False, network=edge_network) as edge:
                for clip in clips:
                    gap, over = await one_turn(edge, cast(Literal["twilio", "plivo"], provider), load_clip(clip))
                    talk_over += over
                    if gap is not None:
                        gaps.append(gap)
        async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
            metrics = (await client.get(f"{server.url}/metrics")).text
    finally:
        await server.stop()
        server.cleanup()
    n = len(clips) * len(providers)
    stt_n = _metric(metrics, "bargein_stt_seconds_count")
    gap_n = _metric(metrics, "bargein_turn_gap_seconds_count")
    stt_ms = _metric(metrics, "bargein_stt_seconds_sum") / stt_n * 1000.0 if stt_n else float("nan")
    server_ms = _metric(metrics, "bargein_turn_gap_seconds_sum") / gap_n * 1000.0 if gap_n else float("nan")
    silence_ms = float(os.environ.get("TURN_END_SILENCE_MS") or Settings.model_fields["turn_end_silence_ms"].default)
    lo, hi = wilson(talk_over, n)
    print(f"turn gap, edge to edge ({', '.join(providers)}, {len(clips)} read sentences each, "
          f"{'network 40 +/- 15 ms each way' if network else 'loopback'}): {len(gaps)}/{n} answered")
    print(f"  p50 {_pct(gaps, 50):.0f} ms, p95 {_pct(gaps, 95):.0f} ms, max {max(gaps, default=float('nan')):.0f} ms")
    print(f"  breakdown (means): turn-end silence {silence_ms:.0f} ms, recognizer {stt_ms:.0f} ms, LLM first "
          f"sentence + synthesis {server_ms - silence_ms - stt_ms:.0f} ms (server's gap {server_ms:.0f} ms), "
          f"network + pacing {_pct(gaps, 50) - server_ms:.0f} ms (edge p50 minus the server's mean)")
    print(f"  agent audio before the caller's clip ended (talk-over): {talk_over}/{n} "
          f"({talk_over / n:.0%}, CI {lo:.0%}-{hi:.0%})" if n else "")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bargein bench --mode turns", description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=10, help="read sentences (one call each) per provider")
    p.add_argument("--providers", default="twilio,plivo", help="comma-separated: twilio, plivo")
    p.add_argument("--no-network", action="store_true", help="loopback without the emulator's network delay")
    args = p.parse_args(argv)
    return asyncio.run(measure(args.calls, args.providers.split(","), not args.no_network))


if __name__ == "__main__":
    raise SystemExit(main())
