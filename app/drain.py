"""Drain: what the process does between the first SIGTERM and its exit, as a pure state machine.

Theory of operation
-------------------
A deploy replaces a process that is carrying live calls. The process must not hang up on them, and must not
take new ones, so a SIGTERM does not stop it: it starts a drain.

    state      how it is entered                   what the process does in it
    SERVING    start                               readiness 200; the answer webhooks take calls
    DRAINING   first SIGTERM (or SIGINT)           readiness 503, liveness still 200; the answer webhooks
                                                   speak the busy line; live calls go on (audio, barge-in)
    STOPPING   the last call is gone (and          the server stops: listeners closed, lifespan shut down
               `linger_s` has passed), or a        (forced: the live streams are closed at once)
               second signal (forced)

While DRAINING, `poll(now, live)` is asked a few times a second:

- `live == 0` -> `Exit(forced=False)`, but not before `linger_s` after the last call the answer webhooks took
  before the signal: that call's stream may not have arrived yet (the provider opens it right after reading
  the TwiML / XML). With no such call the process exits at once.
- `timeout_s` after the signal, calls still up -> `SayGoodbye` (once): every live call hears a short goodbye
  and ends. Once `goodbye_s` more has passed, the process exits whatever is still up (`Exit`, not forced: the
  server's normal shutdown closes the rest).

A second signal in any state -> `Exit(forced=True)`: the operator (or Kubernetes after
terminationGracePeriodSeconds, with SIGKILL) wants it gone now.

No clock is read here and nothing awaits: times are arguments. The process's glue (`DrainControl` below and
app/cli.py's server) reads the clock, counts the calls and does what the actions say.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

# A call answered just before SIGTERM has its stream connect within a second or two (the provider opens it
# right after reading the TwiML / XML): wait this long after such an answer before exiting with none live.
LINGER_S = 2.0
# How long the goodbye may take to play before the process exits anyway: a short line is 2-4 s of audio.
GOODBYE_S = 15.0


class Phase(enum.Enum):
    SERVING = "serving"
    DRAINING = "draining"
    STOPPING = "stopping"


@dataclass(frozen=True, slots=True)
class StartDrain:
    """The first signal: stop taking calls, keep the live ones."""

    at: float


@dataclass(frozen=True, slots=True)
class SayGoodbye:
    """DRAIN_TIMEOUT_S has passed with calls still up: each says the goodbye line and ends."""

    at: float
    live: int


@dataclass(frozen=True, slots=True)
class Exit:
    """Stop the server now. `forced`: a second signal, live streams are closed without a goodbye."""

    at: float
    forced: bool
    reason: str


Action = StartDrain | SayGoodbye | Exit


class Drain:
    """The drain's state: `signal(now)` on SIGTERM/SIGINT, `poll(now, live)` while draining."""

    def __init__(self, timeout_s: float, *, linger_s: float = LINGER_S, goodbye_s: float = GOODBYE_S) -> None:
        if timeout_s < 0 or linger_s < 0 or goodbye_s < 0:
            raise ValueError("drain times must be >= 0")
        self.timeout_s = timeout_s
        self.linger_s = linger_s
        self.goodbye_s = goodbye_s
        self.phase = Phase.SERVING
        self.started_at: float | None = None
        self.linger_until = 0.0  # no exit before this, even with no call live
        self.goodbye_at: float | None = None
        self.forced = False

    @property
    def accepting(self) -> bool:
        """New calls are taken (the answer webhooks, readiness)."""
        return self.phase is Phase.SERVING

    def signal(self, now: float, answered_at: float | None = None) -> StartDrain | Exit:
        """A SIGTERM or SIGINT: the first starts the drain, any later one stops at once. `answered_at`: when
        the answer webhooks last took a call (None: never)."""
        if self.phase is Phase.SERVING:
            self.phase = Phase.DRAINING
            self.started_at = now
            self.linger_until = now if answered_at is None else max(now, answered_at + self.linger_s)
            return StartDrain(now)
        self.phase = Phase.STOPPING
        self.forced = True
        return Exit(now, forced=True, reason="second signal")

    def poll(self, now: float, live: int) -> Action | None:
        """What to do now, with `live` calls (and streams about to start) still up; None: nothing yet."""
        if self.phase is Phase.SERVING:
            return None
        if self.phase is Phase.STOPPING:
            return Exit(now, forced=self.forced, reason="stopping")
        assert self.started_at is not None
        since = now - self.started_at
        if live <= 0 and now >= self.linger_until:
            self.phase = Phase.STOPPING
            return Exit(now, forced=False, reason="drained")
        if self.goodbye_at is None:
            if since >= self.timeout_s and live > 0:
                self.goodbye_at = now
                return SayGoodbye(now, live)
            return None
        if now - self.goodbye_at >= self.goodbye_s:
            self.phase = Phase.STOPPING
            return Exit(now, forced=False, reason="goodbye timeout")
        return None


class DrainControl:
    """The one `Drain` of a process, shared by the server (signals, exit) and the app (readiness, webhooks,
    goodbyes). Every method runs on the event loop's thread; the server hands signals over with
    `loop.call_soon_threadsafe`, so a signal never lands in the middle of a poll.

    The app `attach`es how to count its live calls and how to make them say goodbye; until it does (or in an app
    that is never signalled, as in the in-process tests) the drain has nothing to wait for.
    """

    def __init__(self, drain: Drain, now: Callable[[], float]) -> None:
        self.drain = drain
        self._now = now
        self._live: Callable[[], int] = lambda: 0
        self._goodbye: Callable[[], None] = lambda: None
        self._answered_at: float | None = None
        self.on_change: list[Callable[[Phase], None]] = []  # e.g. a metric of the drain state

    def attach(self, live: Callable[[], int], goodbye: Callable[[], None]) -> None:
        self._live = live
        self._goodbye = goodbye

    @property
    def phase(self) -> Phase:
        return self.drain.phase

    @property
    def accepting(self) -> bool:
        return self.drain.accepting

    def live(self) -> int:
        return self._live()

    def admit(self) -> bool:
        """An answer webhook asks whether to take a call: yes while serving (and its time is kept: the drain
        waits a little for the stream of a call taken just before the signal)."""
        if not self.drain.accepting:
            return False
        self._answered_at = self._now()
        return True

    def signal(self) -> StartDrain | Exit:
        action = self.drain.signal(self._now(), self._answered_at)
        self._changed()
        return action

    def poll(self) -> Action | None:
        """Advance the drain; says goodbye when due. Returns the action (an Exit: the server should stop)."""
        before = self.drain.phase
        action = self.drain.poll(self._now(), self._live())
        if isinstance(action, SayGoodbye):
            self._goodbye()
        if self.drain.phase is not before:
            self._changed()
        return action

    def _changed(self) -> None:
        for callback in self.on_change:
            callback(self.drain.phase)
