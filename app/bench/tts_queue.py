"""How long a sentence waits for espeak-ng when many calls speak at once (issue 13, item 6).

    .venv/bin/python -m app.bench.tts_queue [--calls 20,100] [--processes 0,2] [--duration 20] [--interval 4]

Theory of operation
-------------------
espeak-ng is one engine per process (providers/tts/espeak.py), so every call's sentences queue on one worker
thread. What a caller notices is the wait before their sentence starts being synthesised: it adds to the turn
gap (caller stops -> agent audio) one to one. The engine reports each job's wait (submitted -> started on the
worker, `EspeakTts(on_wait=...)`), so the figures are measured waits, not latency minus a guessed service time.
No cache in front: each request is a different text, as an LLM's first clauses are.

Two loads, each at every `--calls` N and every `--processes` P (0 = the in-process thread, P >= 1 = a pool of P
espeak worker processes):

- **burst**: N calls ask for their first clause at the same instant (N greetings, or N callers who stopped
  talking together). The worst case; the last one waits for all the others.
- **steady**: each of N calls sends a clause at random times, on average one every `--interval` seconds
  (Poisson, seeded), for `--duration` seconds. A call in conversation sends a clause to TTS every few seconds
  while the agent talks (a clause is about 1.5-3 s of audio). Utilisation = N x service / interval, printed.

The service time (one clause alone on an idle engine) is printed beside them. All in this process, no server;
the machine is shared, so compare rows of one run rather than runs.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

from providers.tts.espeak import EspeakTts

# The first clause of a reply as the call path sends it (TTS_FIRST_CLAUSE_CHARS=20 cuts at a clause end once
# 20 characters long): 20-60 characters. A number keeps every text distinct, so nothing could be shared.
CLAUSES = (
    "Sure, I can help with that,",
    "Let me check your booking for Friday,",
    "We are open from nine to five on weekdays,",
    "I have cancelled the appointment,",
    "Of course, here it is again:",
    "Your order left the warehouse yesterday,",
    "Thanks for waiting, I found your account,",
    "I am sorry to hear that,",
)


def clause(i: int) -> str:
    return f"{CLAUSES[i % len(CLAUSES)]} number {i}."


@dataclass(frozen=True, slots=True)
class WaitStats:
    """Queue waits of one run, in milliseconds."""

    load: str
    calls: int
    processes: int
    jobs: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    utilisation: float | None = None  # offered load / capacity, steady only


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100.0 * len(ordered))))
    return ordered[rank - 1]


def summarise(load: str, calls: int, processes: int, waits_s: Sequence[float],
              utilisation: float | None = None) -> WaitStats:
    ms = [w * 1000.0 for w in waits_s]
    return WaitStats(load, calls, processes, len(ms), percentile(ms, 50), percentile(ms, 95), max(ms), utilisation)


def arrivals(calls: int, interval_s: float, duration_s: float, seed: int) -> list[float]:
    """Send times (s from the start) of every clause: each call a Poisson process of rate 1/interval_s."""
    rng = random.Random(seed)
    times: list[float] = []
    for _ in range(calls):
        t = rng.uniform(0.0, interval_s)  # calls are not in step
        while t < duration_s:
            times.append(t)
            t += rng.expovariate(1.0 / interval_s)
    return sorted(times)


async def service_ms(processes: int, repeats: int = 8) -> float:
    """Median time to synthesise one clause on an idle engine."""
    tts = EspeakTts(processes=processes)
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        await tts.synthesize(clause(1000 + i))
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


async def warm(processes: int) -> None:
    """Load espeak in the thread or in every pool process before anything is measured."""
    tts = EspeakTts(processes=processes)
    await asyncio.gather(*(tts.synthesize(clause(2000 + i)) for i in range(max(1, processes) * 2)))


async def burst(calls: int, processes: int) -> WaitStats:
    waits: list[float] = []
    tts = EspeakTts(processes=processes, on_wait=waits.append)
    await asyncio.gather(*(tts.synthesize(clause(i)) for i in range(calls)))
    return summarise("burst", calls, processes, waits)


async def steady(calls: int, processes: int, interval_s: float, duration_s: float, service_s: float,
                 seed: int = 1) -> WaitStats:
    waits: list[float] = []
    tts = EspeakTts(processes=processes, on_wait=waits.append)
    start = time.perf_counter()
    jobs = []
    for i, at in enumerate(arrivals(calls, interval_s, duration_s, seed)):
        delay = start + at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        jobs.append(asyncio.ensure_future(tts.synthesize(clause(i))))
    await asyncio.gather(*jobs)
    capacity = max(1, min(processes, os.cpu_count() or 1)) if processes else 1
    return summarise("steady", calls, processes, waits, calls * service_s / interval_s / capacity)


def row(s: WaitStats) -> str:
    util = f"{s.utilisation:5.2f}" if s.utilisation is not None else "    -"
    return (f"{s.load:6s} {s.calls:5d} {s.processes:9d} {s.jobs:5d} {util} "
            f"{s.p50_ms:9.1f} {s.p95_ms:9.1f} {s.max_ms:9.1f}")


async def main(calls: Sequence[int], processes: Sequence[int], interval_s: float, duration_s: float) -> None:
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.2f} at start")
    services: dict[int, float] = {}
    for p in processes:
        await warm(p)
        services[p] = await service_ms(p)
        print(f"processes={p}: service time of one clause alone: {services[p]:.1f} ms (median of 8)")
    print("load   calls processes  jobs  util   wait p50  wait p95  wait max  (ms)")
    for n in calls:
        for p in processes:
            print(row(await burst(n, p)), flush=True)
        for p in processes:
            print(row(await steady(n, p, interval_s, duration_s, services[p] / 1000.0)), flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


def cli(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m app.bench.tts_queue", description=__doc__.split("\n")[0])
    p.add_argument("--calls", default="20,100", help="concurrent calls, comma-separated (default 20,100)")
    p.add_argument("--processes", default="0,2", help="0 = one espeak thread; N = a pool of N processes")
    p.add_argument("--interval", type=float, default=4.0, help="steady: mean seconds between a call's clauses")
    p.add_argument("--duration", type=float, default=20.0, help="steady: seconds of arrivals")
    args = p.parse_args(argv)
    asyncio.run(main([int(x) for x in args.calls.split(",")], [int(x) for x in args.processes.split(",")],
                     args.interval, args.duration))


if __name__ == "__main__":
    cli()
