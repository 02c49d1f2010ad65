"""GET /calls/{call_id}/report: the picture of a recorded call (app/report), when RECORD_DIR is set."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse

from app.record.format import RecordingError, find_recording, read_recording

logger = logging.getLogger(__name__)


def render_report(path: Path) -> str:
    """The report page of the recording at `path` (blocking: a few hundred ms for a long call)."""
    from app.report.render import page_html  # plotly is imported by the first report, not at start-up
    from app.report.timeline import build_timeline

    return page_html(build_timeline(read_recording(path)))


def report_router(record_dir: str, require_admin: Callable[[Request], None]) -> APIRouter:
    """`record_dir` empty: recording is off and every report is 404."""
    router = APIRouter()

    @router.get("/calls/{call_id}/report", response_class=HTMLResponse, dependencies=[Depends(require_admin)])
    async def call_report(call_id: str) -> HTMLResponse:
        if not record_dir:
            raise HTTPException(status_code=404, detail="recording is off (RECORD_DIR is not set)")
        path = find_recording(record_dir, call_id)
        if path is None:
            raise HTTPException(status_code=404, detail="no recording of that call")
        try:
            # off the event loop: decoding and drawing a long call takes a few hundred ms of CPU
            page = await asyncio.to_thread(render_report, path)
        except RecordingError as exc:
            logger.warning("recording %s cannot be read: %s", path.name, exc)
            raise HTTPException(status_code=422, detail=f"the recording cannot be read: {exc}") from None
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    return router
