"""HTTP route of the recording files (the URLs their DocumentReferences give): read by the
admin API key or a clinician of the room, as the consult record (kernel/records/record_api.py)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from sqlalchemy import select

from kernel.http import error
from kernel.keys import AUDIT, RECORDS
from kernel.records.record_api import ROOM, reader_or_response
from kernel.sources import kind_of
from recording import tables as rt

#: the folder the recording files are kept under
RECORDINGS_ROOT = web.AppKey("recordings_root", Path)


async def recording_file(request: web.Request) -> web.StreamResponse:
    """One recording file of the room (the URL its DocumentReference gives)."""
    room = request.match_info["room"]
    who = await reader_or_response(request, room, "record.file")
    if isinstance(who, web.Response):
        return who
    try:
        file_id = int(request.match_info["file_id"])
    except ValueError:
        return error(404, "not_found", "No such recording file.")
    store = request.app[RECORDS]
    async with store.engine.connect() as conn:
        row = (
            await conn.execute(
                select(rt.recording_files).where(
                    rt.recording_files.c.id == file_id, rt.recording_files.c.room == room
                )
            )
        ).first()
    root = request.app[RECORDINGS_ROOT].resolve()
    path = (root / row.path).resolve() if row is not None else None
    if path is None or not path.is_relative_to(root) or not path.is_file():
        return error(404, "not_found", "No such recording file.")
    await request.app[AUDIT].append(
        "record.file", who, f"room:{room}", "ok", {"file": row.path, "ip": request.remote}
    )
    return web.FileResponse(path, headers={"Content-Type": recording_mime(row.source, path)})


def recording_mime(source: str, path: Path) -> str:
    """The MIME type of a recording file."""
    kind = kind_of(source)
    return f"{kind}/webm" if path.suffix == ".webm" else f"{kind}/x-matroska"


def add_routes(app: web.Application, root: Path) -> None:
    """Register the recording files' route."""
    app[RECORDINGS_ROOT] = root
    app.router.add_get(f"/api/rooms/{ROOM}/recordings/{{file_id:[0-9]{{1,12}}}}", recording_file)
