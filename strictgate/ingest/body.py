"""The HTTP edge of a request body: content type, size cap and decompression.

The cap applies to the bytes the validator will see, i.e. after decompression, and holds for
chunked bodies (no Content-Length) as for declared ones. Decompression is incremental with a
bounded output per step, so a compression bomb costs at most about the cap in memory.
"""

from __future__ import annotations

import zlib

import zstandard
from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive

from strictgate.errors import ApiError

# Bounded input per zstd step: a zstd RLE block turns ~4 bytes into 128 KiB, so 256 input
# bytes can expand to at most ~8 MiB before we get to look at the running total again.
_ZSTD_STEP = 256
# gzip is bounded on the output side directly (zlib's max_length).
_GZIP_STEP = 1 << 20
# zstd frames may declare windows up to 2 GiB; refuse anything past this so a crafted
# frame header cannot make us allocate far more than the body cap.
_ZSTD_MAX_WINDOW = 1 << 24


def too_large(cap: int) -> ApiError:
    """The 413 answer for a body over ``cap`` bytes."""
    return ApiError(
        413, f"Request body too large (limit {cap} bytes)", "body_too_large",
    )


_MORE_MEDIA_TYPES: dict[str, frozenset[str]] = {}
"""Media types an ingest route takes besides JSON, by route path (see
:func:`accept_media_type`)."""


def accept_media_type(path: str, media: str) -> None:
    """Let the ingest route at ``path`` take ``media`` bodies besides JSON (a dialect whose
    API documents another one, e.g. NDJSON, declares it when its module is imported)."""
    _MORE_MEDIA_TYPES[path] = _MORE_MEDIA_TYPES.get(path, frozenset()) | {media}


def media_type(request: Request) -> str:
    """The request's media type, lower case, without parameters."""
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


def _route_path(request: Request) -> str:
    """The path the ingest routes match (under a ``root_path``, the part after it)."""
    path: str = request.scope.get("path", "")
    root: str = request.scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def check_content_type(request: Request) -> None:
    """415 unless the request says ``application/json`` (or a media type its route accepts:
    :func:`accept_media_type`); a charset, when given, must be utf-8."""
    raw = request.headers.get("content-type", "")
    media, _, params = raw.partition(";")
    media = media.strip().lower()
    if media != "application/json":
        more = _MORE_MEDIA_TYPES.get(_route_path(request)) if _MORE_MEDIA_TYPES else None
        if not more or media not in more:
            allowed = " or ".join(["application/json", *sorted(more or ())])
            raise ApiError(415, f"Content-Type must be {allowed}", "unsupported_media_type")
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8", "utf8",
        ):
            raise ApiError(415, "Only the utf-8 charset is supported", "unsupported_charset")


def content_encoding(request: Request) -> str:
    """``identity``, ``gzip`` or ``zstd``; 415 for anything else (``br``, ``gzip, gzip``...)."""
    raw = request.headers.get("content-encoding", "").strip().lower()
    if raw in ("", "identity"):
        return "identity"
    if raw in ("gzip", "x-gzip"):
        return "gzip"
    if raw == "zstd":
        return "zstd"
    raise ApiError(
        415, "Content-Encoding must be gzip, zstd or identity", "unsupported_content_encoding",
    )


def check_declared_length(request: Request, cap: int) -> None:
    """413 before reading anything when Content-Length already exceeds the cap."""
    declared = request.headers.get("content-length")
    if declared is None:
        return
    try:
        length = int(declared)
    except ValueError:
        raise ApiError(400, "Invalid Content-Length", "invalid_content_length") from None
    if length > cap:
        raise too_large(cap)


async def _read_capped(receive: Receive, cap: int) -> bytes:
    """The body's bytes from the ASGI messages, 413 past ``cap``. Read from ``receive``
    itself, as ``Request.stream`` does, without its async generator per request."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > cap:
            raise too_large(cap)
        parts.append(chunk)
        if not message.get("more_body", False):
            return parts[0] if len(parts) == 1 else b"".join(parts)


def _gunzip(data: bytes, cap: int) -> bytes:
    out: list[bytes] = []
    size = 0
    pending = data
    # A gzip body may hold several members back to back; each gets its own decompressor.
    while pending:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        buf = pending
        while True:
            try:
                piece = inflater.decompress(buf, _GZIP_STEP)
            except zlib.error:
                raise ApiError(400, "Invalid gzip body", "invalid_gzip") from None
            size += len(piece)
            if size > cap:
                raise too_large(cap)
            out.append(piece)
            if inflater.eof:
                break
            buf = inflater.unconsumed_tail
            if not buf and not piece:
                raise ApiError(400, "Truncated gzip body", "invalid_gzip")
        pending = inflater.unused_data
    return b"".join(out)


def _unzstd(data: bytes, cap: int) -> bytes:
    out: list[bytes] = []
    size = 0
    pending = data
    dctx = zstandard.ZstdDecompressor(max_window_size=_ZSTD_MAX_WINDOW)
    # One decompressobj per frame: it reports eof at the end of its frame, which is how a
    # truncated last frame is told apart from a complete one.
    while pending:
        frame = dctx.decompressobj()
        offset = 0
        while not frame.eof:
            if offset >= len(pending):
                raise ApiError(400, "Truncated zstd body", "invalid_zstd")
            step = pending[offset : offset + _ZSTD_STEP]
            offset += len(step)
            try:
                piece = frame.decompress(step)
            except zstandard.ZstdError:
                raise ApiError(400, "Invalid zstd body", "invalid_zstd") from None
            size += len(piece)
            if size > cap:
                raise too_large(cap)
            out.append(piece)
        pending = frame.unused_data + pending[offset:]
    return b"".join(out)


async def read_body(request: Request, cap: int) -> bytes:
    """The request body, decompressed, at most ``cap`` bytes (413 beyond)."""
    encoding = content_encoding(request)
    check_declared_length(request, cap)
    raw = await _read_capped(request.receive, cap)
    if encoding == "gzip":
        return _gunzip(raw, cap)
    if encoding == "zstd":
        return _unzstd(raw, cap)
    return raw
