"""The picture of a call as one self-contained HTML page, and as a PNG screenshot of that page.

The page carries plotly.js inline (no network needed to open it, years later, on a laptop on a plane), the
headline, the call's particulars, the figure (zoomable: drag a range, double-click to reset), the barge-ins
with their latency breakdown and the transcript. The PNG is the same page shot by headless Chromium, so the
two never disagree; there is no second renderer to keep in step (kaleido would need a Chrome as well).
"""

from __future__ import annotations

import datetime as dt
import html
import shutil
import subprocess
import tempfile
from pathlib import Path

from app.record.format import Recording, read_recording
from app.report.figure import HEIGHT, LABEL_SPAN_S, WIDTH, build_figure, headline
from app.report.timeline import TALK_OVER_MS, Timeline, build_timeline

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
ROW_PX = 23  # a table row in the PNG (one line, cut with an ellipsis)


class ReportError(Exception):
    """The report could not be written; the message is one line for a person."""


# Refits the sentence labels to the visible range after every zoom or pan, and hides them when the range is
# wider than LABEL_SPAN_S (the figure's initial text is fitted to the whole call the same way).
_LABEL_SCRIPT = """
var gd = document.getElementById('{plot_id}');
function fitText(t, n) { if (n < 4) return ''; return t.length <= n ? t : t.slice(0, n - 1).trimEnd() + '\\u2026'; }
function refit() {
  var xa = gd._fullLayout.xaxis3 || gd._fullLayout.xaxis, r = xa.range, span = r[1] - r[0], w = xa._length;
  gd.data.forEach(function (tr, i) {
    if (!(tr.meta && tr.meta.labels)) return;
    var texts = tr.customdata.map(function (c) { return fitText(c[0], Math.floor(c[1] * w / span / %(char)s)); });
    Plotly.restyle(gd, {text: [texts], visible: span <= %(span)s}, [i]);
  });
}
gd.on('plotly_relayout', function (ev) {
  if (Object.keys(ev).some(function (k) { return k.indexOf('xaxis') === 0 || k === 'autosize'; })) refit();
});
refit();
"""

_CSS = """
body { font-family: Helvetica, Arial, sans-serif; margin: 0; padding: 14px 22px; color: #1d2430; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px 0; }
h1 .bad { color: #d62728; }
h2 { font-size: 16px; margin: 18px 0 6px 0; }
.meta { color: #4a5568; font-size: 13px; margin-bottom: 6px; }
.meta b { color: #1d2430; }
.key { font-size: 12px; color: #4a5568; }
.key span { display: inline-block; margin-right: 14px; }
.sw { display: inline-block; width: 14px; height: 10px; margin-right: 4px; vertical-align: -1px; }
table { border-collapse: collapse; font-size: 13px; width: 100%; }
th { text-align: left; background: #f1f4f8; font-weight: 600; }
th, td { padding: 3px 8px; border-bottom: 1px solid #e3e7ed; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.cut td { background: #fff4e8; }
.warn { color: #b00020; font-weight: 600; }
body.png table { table-layout: fixed; }
body.png td, body.png th { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; height: 16px; }
"""


def _key() -> str:
    items = [("#2f7d32", "caller"), ("rgba(255,193,7,0.45)", "VAD starting"), ("rgba(76,175,80,0.45)",
             "VAD speaking"), ("rgba(120,120,120,0.35)", "VAD stopping"), ("#1f5fbf", "agent, as heard"),
             ("rgba(240,140,46,0.6)", "agent audio cut by a clear"), ("rgba(214,39,40,0.35)",
             f"talk-over (darker: > {TALK_OVER_MS:.0f} ms)"), ("#d62728", "barge-in decided / clear")]
    spans = "".join(f'<span><i class="sw" style="background:{c}"></i>{html.escape(t)}</span>' for c, t in items)
    return (f'<div class="key">{spans}<span>▼ marker sent · ● acked · ○ acked after a clear · '
            f'✕ never acked</span><span>drag to zoom, double-click to reset; sentence text shows below '
            f'{LABEL_SPAN_S:.0f} s</span></div>')


def _meta(tl: Timeline) -> str:
    started = (dt.datetime.fromtimestamp(tl.started_at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
               if tl.started_at is not None else "?")
    acked = sum(1 for m in tl.marks if m.acked is not None)
    agent_turns = [t for t in tl.turns if t.role == "agent"]
    parts = [
        f"call <b>{html.escape(tl.call_id)}</b>", f"<b>{html.escape(tl.provider)}</b>", f"started {started}",
        f"<b>{tl.duration_s:.1f} s</b>", f"{len(tl.turns)} turns ({len(agent_turns)} agent, "
        f"{sum(1 for t in agent_turns if t.interrupted)} interrupted)", f"{len(tl.clears)} clears",
        f"markers {len(tl.marks)} sent / {acked} acked", f"end: {html.escape(tl.end_reason or '?')}",
    ]
    if tl.threshold is not None:
        parts.append(f"VAD threshold {tl.threshold:g}")
    out = " · ".join(parts)
    if tl.truncated:
        out += ' · <span class="warn">the recording has no end: the call was cut short or is still running</span>'
    if tl.unparsed_frames:
        out += f' · <span class="warn">{tl.unparsed_frames} frames not JSON</span>'
    return f'<div class="meta">{out}</div>'


def _bargein_table(tl: Timeline) -> str:
    if not tl.bargeins:
        return ""
    rows = []
    for i, b in enumerate(tl.bargeins):
        def ms(v: float | None) -> str:
            return "" if v is None else f"{v:.1f}"
        rows.append(
            f"<tr><td class=n>{i + 1}</td><td class=n>{b.t:.3f}</td><td class=n>{b.turn_id}</td>"
            f"<td class=n>{ms(b.talk_over_ms)}</td><td class=n>{ms(b.clear_sent_ms)}</td>"
            f"<td class=n>{ms(b.tts_stopped_ms)}</td><td class=n>{ms(b.llm_closed_ms)}</td>"
            f"<td class=n><b>{ms(b.total_ms)}</b></td>"
            f"<td>{html.escape(b.outcome)}{' (' + html.escape(b.reason) + ')' if b.reason else ''}</td>"
            f"<td>{html.escape(b.heard_text or '')}</td></tr>")
    return ("<h2>Barge-ins</h2><table><colgroup><col style='width:3%'><col style='width:7%'><col style='width:5%'>"
            "<col style='width:8%'><col style='width:8%'><col style='width:8%'><col style='width:8%'>"
            "<col style='width:7%'><col style='width:11%'><col></colgroup><tr><th>#</th><th>decided, s</th>"
            "<th>turn</th><th>talk-over, ms</th><th>clear sent, ms</th><th>TTS stopped, ms</th>"
            "<th>LLM closed, ms</th><th>total, ms</th><th>outcome</th>"
            "<th>what the caller heard of the agent's turn</th></tr>" + "".join(rows) + "</table>")


def _transcript(tl: Timeline) -> str:
    rows = []
    for t in tl.turns:
        at = "" if t.start is None else f"{t.start:.2f}"
        cls = ' class="cut"' if t.interrupted else ""
        rows.append(f"<tr{cls}><td class=n>{t.turn_id}</td><td class=n>{at}</td><td>{html.escape(t.role)}</td>"
                    f"<td>{html.escape(t.text)}</td><td>{'yes' if t.interrupted else ''}</td>"
                    f"<td>{html.escape(t.heard_text or '')}</td></tr>")
    return ("<h2>Transcript</h2><table><colgroup><col style='width:4%'><col style='width:6%'>"
            "<col style='width:5%'><col style='width:47%'><col style='width:7%'><col></colgroup>"
            "<tr><th>turn</th><th>at, s</th><th>role</th><th>text</th><th>interrupted</th><th>heard</th></tr>"
            + "".join(rows) + "</table>")


def page_html(tl: Timeline, *, for_png: bool = False) -> str:
    """The whole report page; `for_png` fixes the figure's width and keeps every table row one line high."""
    fig = build_figure(tl)
    if not for_png:
        fig.update_layout(width=None, autosize=True)
    div = fig.to_html(
        full_html=False, include_plotlyjs=True, div_id="call", default_width="100%" if not for_png else WIDTH,
        default_height=HEIGHT,
        config={"displaylogo": False, "responsive": not for_png, "scrollZoom": True,
                "toImageButtonOptions": {"filename": f"call-{tl.call_id}", "width": WIDTH, "height": HEIGHT}},
        post_script=_LABEL_SCRIPT.replace("%(char)s", "6.3").replace("%(span)s", str(LABEL_SPAN_S)),
    )
    head = html.escape(headline(tl))
    bad = tl.long_talk_overs or tl.truncated
    title = f'<h1{"" if not bad else " class=bad"}>{head}</h1>'
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(tl.call_id)}: {head}</title><style>{_CSS}</style></head>"
        f"<body{' class=png' if for_png else ''}>{title}{_meta(tl)}{_key()}{div}{_bargein_table(tl)}"
        f"{_transcript(tl)}</body></html>"
    )


def png_height(tl: Timeline) -> int:
    """The page's height in the PNG: every block has a fixed height there."""
    tables = (len(tl.bargeins) + 1) * ROW_PX + 40 if tl.bargeins else 0
    return 14 + 30 + 40 + 22 + HEIGHT + tables + (len(tl.turns) + 1) * ROW_PX + 40 + 30


def find_browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(html_path: Path, png_path: Path, width: int, height: int, browser: str | None = None) -> None:
    """Shoot `html_path` with headless Chromium into `png_path` (width x height CSS px)."""
    exe = browser or find_browser()
    if exe is None:
        raise ReportError("a PNG needs headless Chromium and none is installed: apt-get install -y chromium "
                          "(or write .html instead)")
    with tempfile.TemporaryDirectory(prefix="bargein-chromium-") as profile:
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-extensions", "--mute-audio", f"--user-data-dir={profile}", "--hide-scrollbars",
               f"--window-size={width},{height}", "--virtual-time-budget=10000",
               f"--screenshot={png_path.resolve()}", html_path.resolve().as_uri()]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ReportError(f"headless Chromium failed: {exc}") from exc
    if done.returncode != 0 or not png_path.exists():
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ReportError(f"headless Chromium exited {done.returncode} without a screenshot: {tail}")


def write_report(recording: Recording | str | Path, out: str | Path, browser: str | None = None) -> Timeline:
    """Write the report of `recording` to `out`: .html (self-contained) or .png (a screenshot of it)."""
    rec = recording if isinstance(recording, Recording) else read_recording(recording)
    tl = build_timeline(rec)
    out_path = Path(out)
    suffix = out_path.suffix.lower()
    if suffix in (".html", ".htm"):
        out_path.write_text(page_html(tl), encoding="utf-8")
    elif suffix == ".png":
        with tempfile.TemporaryDirectory(prefix="bargein-report-") as tmp:
            page = Path(tmp) / "call.html"
            page.write_text(page_html(tl, for_png=True), encoding="utf-8")
            screenshot(page, out_path, WIDTH + 44, png_height(tl), browser)
    else:
        raise ReportError(f"cannot write {out_path.name}: the output must end in .html or .png")
    return tl
