"""The picture of a call: one plotly figure, four rows on one time axis, built from a `Timeline`.

Rows, top to bottom:
1. the caller's waveform, on bands of the VAD state (amber starting, green speaking, grey stopping);
2. the VAD's probability at each recorded move, and the Silero threshold;
3. the agent's audio as the caller heard it (blue) and what a clear cut off (faded orange, where it would have
   played), the sentences laid along their audio, the cut point with the heard text, talk-over in red;
4. turns (bars), markers sent and acknowledged (a line joins each pair), clears.
Every barge-in is a red line through all rows with its latency breakdown on top.

Waveforms come decimated (app/report/timeline.py), so a 5-minute call is a few thousand points per leg.
Labels that only make sense zoomed in (sentence text) are refitted to the visible range by a small script in
the page (app/report/render.py); `LABEL_SPAN_S` is the widest range they are shown at.
"""

from __future__ import annotations

import bisect
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.report.timeline import TALK_OVER_MS, Envelope, Timeline

WIDTH = 1600  # px: the PNG's width and the HTML's initial one (the HTML then follows the window)
HEIGHT = 860
PLOT_PX = WIDTH - 150  # the plot area inside the margins
LABEL_SPAN_S = 60.0
CHAR_PX = 6.3  # 11 px sans-serif, average

CALLER = "#2f7d32"
AGENT = "#1f5fbf"
CUT = "#f08c2e"
BARGE = "#d62728"
VAD_COLORS = {"starting": "rgba(255, 193, 7, 0.22)", "speaking": "rgba(76, 175, 80, 0.20)",
              "stopping": "rgba(120, 120, 120, 0.15)"}
STATE_MARKER = {"quiet": "#9e9e9e", "starting": "#f5a623", "speaking": "#2e7d32", "stopping": "#616161"}


def fit_text(text: str, chars: int) -> str:
    """`text` cut to `chars` characters with an ellipsis (empty when not even a word start fits)."""
    if chars < 4:
        return ""
    return text if len(text) <= chars else text[: chars - 1].rstrip() + "…"


def headline(tl: Timeline) -> str:
    """The call at a glance, e.g. '2 barge-ins, 0 talk-over > 300 ms'."""
    n = len(tl.bargeins)
    parts = [f"{n} barge-in{'s' if n != 1 else ''}", f"{tl.long_talk_overs} talk-over > {TALK_OVER_MS:.0f} ms"]
    missing = sum(1 for m in tl.marks if m.acked is None and not m.cleared)
    if missing:
        parts.append(f"{missing} marker{'s' if missing != 1 else ''} never acknowledged")
    if tl.truncated:
        parts.append("recording cut short")
    return ", ".join(parts)


def _wave(env: Envelope, color: str, name: str, opacity: float = 1.0) -> go.Scatter:
    """The min/max envelope as filled polygons, one per stretch of audio (NaN between them): solid at a
    glance, and an outline rather than a comb when zoomed in past the decimation."""
    have = ~np.isnan(env.hi)
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    if np.any(have):
        step = float(env.t[1] - env.t[0]) if len(env.t) > 1 else 0.001
        mid = env.t + step / 2
        edges = np.flatnonzero(np.diff(np.concatenate(([0], have.astype(np.int8), [0]))))
        gap = np.array([np.nan])
        for a, z in zip(edges[0::2], edges[1::2], strict=True):
            xs += [mid[a:z], mid[a:z][::-1], mid[a:a + 1], gap]
            ys += [env.hi[a:z], env.lo[a:z][::-1], env.hi[a:a + 1], gap]
    x = np.concatenate(xs).astype(np.float32) if xs else np.zeros(0, np.float32)
    y = np.concatenate(ys).astype(np.float32) if ys else np.zeros(0, np.float32)
    return go.Scatter(x=x, y=y, mode="lines", fill="toself", fillcolor=color, name=name, opacity=opacity,
                      line={"color": color, "width": 0.6}, hoverinfo="skip", connectgaps=False)


def _ylim(*envs: Envelope) -> float:
    peak = max((float(np.nanmax(np.abs(np.concatenate([e.lo, e.hi])))) for e in envs
                if np.any(~np.isnan(e.hi))), default=0.0)
    return max(peak * 1.15, 0.02)


def build_figure(tl: Timeline) -> go.Figure:
    fig = make_subplots(rows=4, cols=1, shared_xaxes=True, vertical_spacing=0.035,
                        row_heights=[0.26, 0.13, 0.37, 0.24])
    duration = max(tl.duration_s, 0.1)
    px_per_s = PLOT_PX / duration
    shapes: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []

    # -- row 1: the caller, on VAD bands ------------------------------------------------------------------
    for a, z, state in tl.vad_bands:
        shapes.append({"type": "rect", "xref": "x", "yref": "y domain", "x0": a, "x1": z, "y0": 0, "y1": 1,
                       "fillcolor": VAD_COLORS.get(state, "rgba(0,0,0,0.05)"), "line": {"width": 0},
                       "layer": "below"})
    fig.add_trace(_wave(tl.caller, CALLER, "caller"), row=1, col=1)
    ylim_caller = _ylim(tl.caller)

    # -- row 2: the VAD ---------------------------------------------------------------------------------------
    if tl.vad:
        xs = [float(v["t"]) for v in tl.vad] + [duration]
        ps = [float(v.get("probability") or 0.0) for v in tl.vad]
        states = [str(v.get("state")) for v in tl.vad]
        fig.add_trace(go.Scatter(
            x=xs, y=ps + ps[-1:], mode="lines", line={"shape": "hv", "color": "#7a7a7a", "width": 1},
            hoverinfo="skip", showlegend=False), row=2, col=1)
        fig.add_trace(go.Scatter(
            x=xs[:-1], y=ps, mode="markers", name="VAD",
            marker={"color": [STATE_MARKER.get(s, "#000") for s in states], "size": 7},
            customdata=[[s, str(v.get("previous")), v.get("level_dbfs")] for s, v in zip(states, tl.vad,
                                                                                        strict=True)],
            hovertemplate="%{x:.3f} s: %{customdata[1]} → <b>%{customdata[0]}</b><br>p=%{y:.2f}, "
                          "level %{customdata[2]} dBFS<extra>VAD</extra>"), row=2, col=1)
    if tl.threshold is not None:
        shapes.append({"type": "line", "xref": "x2 domain", "yref": "y2", "x0": 0, "x1": 1, "y0": tl.threshold,
                       "y1": tl.threshold, "line": {"color": BARGE, "width": 1, "dash": "dot"}})
        annotations.append({"xref": "x2 domain", "yref": "y2", "x": 1, "y": tl.threshold, "xanchor": "right",
                            "yanchor": "bottom", "text": f"threshold {tl.threshold:g}", "showarrow": False,
                            "font": {"size": 10, "color": BARGE}})

    # -- row 3: the agent as heard ----------------------------------------------------------------------------
    ylim_agent = _ylim(tl.agent_heard, tl.agent_cut)
    for a, z in tl.talk_over:
        long = (z - a) * 1000 > TALK_OVER_MS
        shapes.append({"type": "rect", "xref": "x3", "yref": "y3 domain", "x0": a, "x1": z, "y0": 0, "y1": 1,
                       "fillcolor": "rgba(214, 39, 40, 0.28)" if long else "rgba(214, 39, 40, 0.12)",
                       "line": {"width": 0}, "layer": "below"})
    fig.add_trace(_wave(tl.agent_heard, AGENT, "agent, heard"), row=3, col=1)
    fig.add_trace(_wave(tl.agent_cut, CUT, "agent, cut by a clear", opacity=0.55), row=3, col=1)
    # the sentences: a span bar under the waveform (blue heard, orange cut) and the text along it
    bar_x: dict[bool, list[float | None]] = {True: [], False: []}
    label_x, label_text, label_color, label_custom = [], [], [], []
    hover_x, hover_text = [], []
    y_bar = -ylim_agent * 0.93
    heard_starts = sorted(c.start for c in tl.chunks if c.heard_end > c.start)
    placed = [s for s in tl.sentences if s.start is not None and s.end is not None]
    for k, s in enumerate(placed):
        assert s.start is not None and s.end is not None
        heard_end = s.start if s.heard_end is None else s.heard_end
        if heard_end > s.start:
            bar_x[True] += [s.start + 0.02, heard_end - 0.01, None]
        if heard_end < s.end - 1e-6:  # the cut part, up to where the next audio the caller heard starts
            i = bisect.bisect_left(heard_starts, heard_end)
            until = min(s.end, heard_starts[i]) if i < len(heard_starts) else s.end
            if until > heard_end + 0.03:
                bar_x[False] += [max(heard_end, s.start + 0.02), until - 0.02, None]
        # the room a label has: its own audio, up to where the next sentence's text starts
        room = s.end - s.start
        if k + 1 < len(placed):
            nxt = placed[k + 1].start
            assert nxt is not None
            room = max(0.0, min(room, nxt - s.start))
        label_x.append(s.start)
        label_custom.append([s.text, room])
        label_text.append(fit_text(s.text, int(room * px_per_s / CHAR_PX)))
        label_color.append("#20324f" if heard_end > s.start else "#b35900")
        hover_x.append((s.start + s.end) / 2)
        if heard_end >= s.end - 1e-6:
            cut = ""
        elif heard_end > s.start:
            cut = f"<br><b>cut</b> after {heard_end - s.start:.2f} s"
        else:
            cut = "<br><b>never played</b> (cleared)"
        hover_text.append(f"turn {s.turn_id}: {_wrap(s.text)}<br>{s.audio_ms:.0f} ms of audio, queued "
                          f"{s.t:.2f} s, plays {s.start:.2f}–{s.end:.2f} s{cut}")
    for heard, color in ((False, "#f6c392"), (True, "#9db7e0")):
        if bar_x[heard]:
            fig.add_trace(go.Scatter(x=bar_x[heard], y=[None if x is None else y_bar for x in bar_x[heard]],
                                     mode="lines", line={"color": color, "width": 5}, hoverinfo="skip"),
                          row=3, col=1)
    if placed:
        fig.add_trace(go.Scatter(x=hover_x, y=[y_bar] * len(hover_x), mode="markers",
                                 marker={"size": 10, "opacity": 0}, hovertext=hover_text, hoverinfo="text",
                                 name="sentences"), row=3, col=1)
        fig.add_trace(go.Scatter(
            x=label_x, y=[ylim_agent * 0.86] * len(label_x), mode="text", text=label_text,
            textposition="middle right", textfont={"size": 11, "color": label_color}, hoverinfo="skip",
            name="sentence text", meta={"labels": True}, customdata=label_custom,
            visible=duration <= LABEL_SPAN_S), row=3, col=1)

    # -- row 4: turns, markers, clears ------------------------------------------------------------------------
    for role, color in (("user", CALLER), ("agent", AGENT)):
        xs4: list[float | None] = []
        ys4: list[float | None] = []
        hx, ht = [], []
        for turn in tl.turns:
            if turn.role != role or turn.start is None:
                continue
            end = turn.end if turn.end is not None else duration
            xs4 += [turn.start, end, None]
            ys4 += [3, 3, None]
            hx.append((turn.start + end) / 2)
            cut = f"<br><b>interrupted</b>; heard: {turn.heard_text!r}" if turn.interrupted else ""
            ht.append(f"turn {turn.turn_id} ({role}) {turn.start:.2f}–{end:.2f} s<br>{_wrap(turn.text)}{cut}")
        if xs4:
            fig.add_trace(go.Scatter(x=xs4, y=ys4, mode="lines", line={"color": color, "width": 9},
                                     hoverinfo="skip", name=f"{role} turns", showlegend=False), row=4, col=1)
            fig.add_trace(go.Scatter(x=hx, y=[3] * len(hx), mode="markers", marker={"size": 12, "opacity": 0},
                                     hovertext=ht, hoverinfo="text", showlegend=False), row=4, col=1)
    if tl.marks:
        jx: list[float | None] = []
        jy: list[float | None] = []
        for m in tl.marks:
            if m.acked is not None:
                jx += [m.sent, m.acked, None]
                jy += [2, 1, None]
        fig.add_trace(go.Scatter(x=jx, y=jy, mode="lines", line={"color": "#b8b8b8", "width": 1},
                                 hoverinfo="skip", showlegend=False), row=4, col=1)
        fig.add_trace(go.Scatter(
            x=[m.sent for m in tl.marks], y=[2] * len(tl.marks), mode="markers", name="marker sent",
            marker={"symbol": "triangle-down", "size": 9, "color": "#455a64"},
            hovertext=[_mark_hover(m) for m in tl.marks], hoverinfo="text", showlegend=False), row=4, col=1)
        acked = [m for m in tl.marks if m.acked is not None]
        fig.add_trace(go.Scatter(
            x=[m.acked for m in acked], y=[1] * len(acked), mode="markers", name="marker acked",
            marker={"symbol": ["circle-open" if (m.cleared or m.known is False) else "circle" for m in acked],
                    "size": 8, "color": ["#9e9e9e" if (m.cleared or m.known is False) else "#2e7d32"
                                         for m in acked]},
            hovertext=[_mark_hover(m) for m in acked], hoverinfo="text", showlegend=False), row=4, col=1)
        lost = [m for m in tl.marks if m.acked is None]
        if lost:
            fig.add_trace(go.Scatter(
                x=[m.cleared_at if m.cleared_at is not None else m.due if m.due is not None else m.sent
                   for m in lost], y=[1] * len(lost), mode="markers",
                marker={"symbol": "x", "size": 9, "color": ["#9e9e9e" if m.cleared else BARGE for m in lost]},
                hovertext=[_mark_hover(m) for m in lost], hoverinfo="text", showlegend=False), row=4, col=1)
    if tl.clears:
        fig.add_trace(go.Scatter(
            x=[c.t for c in tl.clears], y=[0] * len(tl.clears), mode="markers", name="clear",
            marker={"symbol": "line-ns-open", "size": 14, "line": {"width": 3, "color": BARGE}},
            hovertext=[f"clear at {c.t:.3f} s" + (f" (barge-in {c.barge_in_id})" if c.barge_in_id else "")
                       + (f"<br>{c.dropped_chunks} queued chunks dropped" if c.dropped_chunks is not None else "")
                       + (f"<br>heard {c.heard_audio_ms:.0f} ms of turn {c.heard_turn_id}"
                          if c.heard_audio_ms is not None else "") for c in tl.clears],
            hoverinfo="text", showlegend=False), row=4, col=1)

    # -- barge-ins: a line through every row, the breakdown on top, the cut point on row 3 ----------------------
    spacing = min((b.t - a.t for a, b in zip(tl.bargeins, tl.bargeins[1:], strict=False)), default=duration)
    full = spacing * px_per_s >= 250
    for i, b in enumerate(tl.bargeins):
        shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": b.t, "x1": b.t, "y0": 0, "y1": 1,
                       "line": {"color": BARGE, "width": 1.5}})
        total = f"{b.total_ms:.0f} ms" if b.total_ms is not None else "?"
        talk = f"talk-over {b.talk_over_ms:.0f} ms" if b.talk_over_ms is not None else ""
        if full and b.outcome == "resumed":
            text = (f"<b>barge-in {i + 1}</b> at {b.t:.2f} s · {talk}<br>"
                    f"clear +{_ms(b.clear_sent_ms)} → <b>resumed</b> ({b.reason}) after {_ms(b.settled_ms)} ms")
        elif full:
            settled = f" · settled +{b.settled_ms:.0f} ms ({b.reason})" if b.settled_ms else ""
            text = (f"<b>barge-in {i + 1}</b> at {b.t:.2f} s · {talk}{settled}<br>"
                    f"clear +{_ms(b.clear_sent_ms)} → TTS stopped +{_ms(b.tts_stopped_ms)} → "
                    f"LLM closed +{_ms(b.llm_closed_ms)} = <b>{total}</b>")
        else:
            text = f"<b>{i + 1}</b> {total}"
        lift = 0.035 if not full and i % 2 else 0.0  # compact labels alternate between two heights
        annotations.append({"x": b.t, "xref": "x", "yref": "paper", "y": 1.0 + lift,
                            "yanchor": "bottom", "xanchor": "left" if full else "center", "text": text,
                            "showarrow": False, "font": {"size": 11, "color": BARGE}, "align": "left",
                            "hovertext": _barge_hover(i, b), "bgcolor": "rgba(255,255,255,0.85)"})
    for c in tl.clears:
        b2 = next((b for b in tl.bargeins if b.id == c.barge_in_id), None)
        heard_text = b2.heard_text if b2 is not None else None
        if full and heard_text is not None:
            text = (f"✂ heard: “…{heard_text[-38:]}”" if len(heard_text) > 38 else f"✂ heard: “{heard_text}”")
        else:
            text = "✂"
        annotations.append({"x": c.t, "y": -ylim_agent * 0.55, "xref": "x3", "yref": "y3", "text": text,
                            "showarrow": full, "ax": 0, "ay": 0, "xanchor": "right" if full else "center",
                            "font": {"size": 11, "color": "#7a3a00"}, "bgcolor": "rgba(255,255,255,0.8)",
                            "hovertext": f"what the caller heard of turn {c.heard_turn_id}: {heard_text!r}"})

    fig.update_layout(
        shapes=shapes, annotations=annotations, width=WIDTH, height=HEIGHT, template="plotly_white",
        margin={"l": 110, "r": 40, "t": 70 if full else 60, "b": 45}, hovermode="closest", dragmode="zoom",
        showlegend=False,
        font={"family": "Helvetica, Arial, sans-serif", "size": 12},
    )
    fig.update_xaxes(range=[0, duration], showspikes=True, spikemode="across", spikethickness=1,
                     spikecolor="#999", spikedash="dot")
    fig.update_xaxes(title_text="seconds since the stream opened", row=4, col=1)
    fig.update_yaxes(fixedrange=True, zeroline=False)
    fig.update_yaxes(range=[-ylim_caller, ylim_caller], title_text="caller", showticklabels=False, row=1, col=1)
    fig.update_yaxes(range=[-0.04, 1.05], title_text="VAD p", tickvals=[0, 0.5, 1], row=2, col=1)
    fig.update_yaxes(range=[-ylim_agent, ylim_agent], title_text="agent, as heard", showticklabels=False,
                     row=3, col=1)
    fig.update_yaxes(range=[-0.6, 3.6], tickvals=[0, 1, 2, 3], ticktext=["clears", "acked", "marks", "turns"],
                     row=4, col=1)
    return fig


def _ms(v: float | None) -> str:
    return "?" if v is None else f"{v:.1f}"


def _wrap(text: str, width: int = 90) -> str:
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    lines.append(line)
    return "<br>".join(lines)


def _mark_hover(m: Any) -> str:
    parts = [f"marker {m.name} (turn {m.turn_id}) sent {m.sent:.3f} s"]
    if m.due is not None:
        parts.append(f"its audio ends {m.due:.3f} s")
    if m.acked is not None:
        late = f" ({(m.acked - m.due) * 1000:+.0f} ms)" if m.due is not None else ""
        parts.append(f"acked {m.acked:.3f} s{late}" + ("" if m.known is not False else ", not outstanding"))
    else:
        parts.append("never acknowledged")
    if m.cleared:
        parts.append("cut by a clear")
    return "<br>".join(parts)


def _barge_hover(i: int, b: Any) -> str:
    lines = [f"barge-in {i + 1} ({b.id}), turn {b.turn_id}: decided {b.t:.3f} s",
             f"confidence {b.confidence}, sustained {b.sustained_ms} ms, peak {b.peak_dbfs} dBFS"]
    if b.talk_over_ms is not None:
        lines.append(f"speech onset {b.speech_onset:.3f} s → clear {b.clear_t:.3f} s: talk-over "
                     f"{b.talk_over_ms:.0f} ms")
    lines.append(f"clear sent +{_ms(b.clear_sent_ms)} ms, TTS stopped +{_ms(b.tts_stopped_ms)} ms, "
                 f"LLM closed +{_ms(b.llm_closed_ms)} ms, total {_ms(b.total_ms)} ms")
    if b.heard_text is not None:
        lines.append(f"heard: {_wrap(b.heard_text)}")
    return "<br>".join(lines)
