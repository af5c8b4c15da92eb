"""Reading a request body: with a size cap, refused before it is all read; as JSON, with a cap
on how deeply it nests."""

from __future__ import annotations

import json

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


MAX_JSON_DEPTH = 32  # a FHIR Bundle inside a CDS Hooks request nests about 10 deep


def parse_json(body: bytes) -> object:
    """The JSON value of `body`; ValueError (its message says why) when it is not JSON, or when
    arrays and objects nest deeper than MAX_JSON_DEPTH (the decoder, and every validator after
    it, recurses once per level)."""
    try:
        value = json.loads(body)
    except RecursionError:
        value = None
        depth = MAX_JSON_DEPTH + 1
    else:
        depth = _depth(value)
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"it nests arrays and objects deeper than {MAX_JSON_DEPTH} levels")
    return value


def _depth(value: object) -> int:
    """How deeply arrays and objects nest in `value`, counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1)
                         for child in (node.values() if isinstance(node, dict) else node))
    return deepest
