"""Reading a request body with a size cap, refused before it is all read."""

from __future__ import annotations

from starlette.requests import Request

from clinassist.errors import ClinassistError


class BodyTooLarge(ClinassistError):
    """The body is over the cap; its message says by how much."""


async def read_capped(request: Request, max_bytes: int) -> bytes:
    """The body, or `BodyTooLarge` as soon as Content-Length or the bytes read pass `max_bytes`."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise BodyTooLarge(f"the body is {declared} bytes; the limit is {max_bytes}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLarge(f"the body exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
