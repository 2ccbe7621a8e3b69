"""Interactive API docs, served offline: Swagger UI at ``/api`` (and ``/docs``), a Redoc
reference at ``/reference``, both rendering ``/openapi.json``.

The UIs' files come from the ``openapi-ui-bundles`` package (Swagger UI, Redoc), the two
small start-up scripts from this package's ``static/``; nothing is loaded from another
origin. Assets are served from a fixed table under ``/api/static/<name>``: a name not in
it is a 404, so no request reaches any other file. Pages link the assets with
``?v=<digest>``, which makes such a URL cacheable for a year (``immutable``); any other URL
of an asset must be revalidated (``ETag``). Pages go out with a Content-Security-Policy
that allows scripts from this origin only (no inline script, no eval).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

from openapi_ui_bundles import redoc, swagger_ui
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from strictgate.errors import ApiError

STATIC_PREFIX = "/api/static/"
_OWN = Path(__file__).resolve().parent / "static"
_JS = "text/javascript; charset=utf-8"
_CSS = "text/css; charset=utf-8"
_PNG = "image/png"

# name -> (file, content type): everything /api/static/ can ever answer
ASSET_FILES: dict[str, tuple[Path, str]] = {
    "swagger-ui-bundle.js": (swagger_ui.static_path / "swagger-ui-bundle.js", _JS),
    "swagger-ui.css": (swagger_ui.static_path / "swagger-ui.css", _CSS),
    "favicon-32x32.png": (swagger_ui.static_path / "favicon-32x32.png", _PNG),
    "favicon-16x16.png": (swagger_ui.static_path / "favicon-16x16.png", _PNG),
    "redoc.standalone.js": (redoc.static_path / "redoc.standalone.js", _JS),
    "swagger-init.js": (_OWN / "swagger-init.js", _JS),
    "redoc-init.js": (_OWN / "redoc-init.js", _JS),
}

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"


def content_security_policy(redoc_page: bool) -> str:
    """The pages' policy: scripts and everything else from this origin only (no inline
    script, no eval). Redoc needs two exceptions that Swagger UI does not."""
    return "; ".join([
        "default-src 'none'",
        "script-src 'self'",
        # Redoc injects <style> elements (styled-components)
        "style-src 'self' 'unsafe-inline'" if redoc_page else "style-src 'self'",
        # both UIs' stylesheets draw icons from data: URLs
        "img-src 'self' data:",
        # the document, and Swagger UI's "Try it out" requests
        "connect-src 'self'",
        # Redoc's search index runs in a worker made from a blob
        *(["worker-src blob:"] if redoc_page else []),
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ])


def _page_headers(redoc_page: bool) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(redoc_page),
        "Cache-Control": REVALIDATE,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


@dataclass(frozen=True)
class Asset:
    """One asset's bytes, gzip-compressed bytes (text assets only) and digest."""

    body: bytes
    gzipped: bytes | None
    content_type: str
    digest: str

    @property
    def etag(self) -> str:
        """A strong validator: the content's digest."""
        return f'"{self.digest}"'


def _load(name: str) -> Asset:
    path, content_type = ASSET_FILES[name]
    body = path.read_bytes()
    # mtime 0: the same bytes in every process, so the ETag holds across instances
    gzipped = None if content_type == _PNG else gzip.compress(body, 9, mtime=0)
    return Asset(body, gzipped, content_type, hashlib.sha256(body).hexdigest()[:20])


@functools.cache
def load_assets() -> dict[str, Asset]:
    """Every asset, read and compressed once per process (on the first docs request)."""
    return {name: _load(name) for name in ASSET_FILES}


async def _assets() -> dict[str, Asset]:
    # the first call reads and gzips a few MB: not on the event loop
    return await run_in_threadpool(load_assets)


def _accepts_gzip(request: Request) -> bool:
    """Whether Accept-Encoding allows gzip (``gzip`` or ``*``, with a q above 0)."""
    weights: dict[str, bool] = {}
    for part in request.headers.get("accept-encoding", "").split(","):
        coding, _, params = part.partition(";")
        q = params.strip().lower().removeprefix("q=").strip()
        weights[coding.strip().lower()] = q == "" or q.strip("0.") != ""
    return weights.get("gzip", weights.get("*", False))


async def asset(request: Request) -> Response:
    """``GET /api/static/<name>``: one file of the table, or 404."""
    name = request.path_params["name"]
    if name not in ASSET_FILES:
        raise ApiError(404, "Not found", "not_found")
    item = (await _assets())[name]
    cache = IMMUTABLE if request.query_params.get("v") == item.digest else REVALIDATE
    headers = {"Cache-Control": cache, "ETag": item.etag, "X-Content-Type-Options": "nosniff"}
    if item.gzipped is not None:
        headers["Vary"] = "Accept-Encoding"
    if item.etag in {tag.strip() for tag in request.headers.get("if-none-match", "").split(",")}:
        return Response(status_code=304, headers=headers)
    body = item.body
    if item.gzipped is not None and _accepts_gzip(request):
        body = item.gzipped
        headers["Content-Encoding"] = "gzip"
    return Response(body, headers=headers, media_type=item.content_type)


def _src(assets: dict[str, Asset], name: str) -> str:
    # relative: every docs page sits at the root, so this is /api/static/... behind any
    # path prefix a proxy adds
    return f"{STATIC_PREFIX[1:]}{name}?v={assets[name].digest}"


def swagger_page(assets: dict[str, Asset]) -> str:
    """The Swagger UI page."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>strictgate API · Swagger UI</title>
<link rel="stylesheet" href="{_src(assets, "swagger-ui.css")}">
<link rel="icon" type="image/png" sizes="32x32" href="{_src(assets, "favicon-32x32.png")}">
<link rel="icon" type="image/png" sizes="16x16" href="{_src(assets, "favicon-16x16.png")}">
</head><body>
<noscript>This page needs JavaScript. The API document is
<a href="openapi.json">/openapi.json</a>.</noscript>
<div id="swagger-ui" data-spec-url="openapi.json"></div>
<script src="{_src(assets, "swagger-ui-bundle.js")}"></script>
<script src="{_src(assets, "swagger-init.js")}"></script>
</body></html>
"""


def reference_page(assets: dict[str, Asset]) -> str:
    """The Redoc reference page."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>strictgate API reference</title>
<link rel="icon" type="image/png" sizes="32x32" href="{_src(assets, "favicon-32x32.png")}">
</head><body>
<noscript>This page needs JavaScript. The API document is
<a href="openapi.json">/openapi.json</a>.</noscript>
<div id="redoc" data-spec-url="openapi.json"></div>
<script src="{_src(assets, "redoc.standalone.js")}"></script>
<script src="{_src(assets, "redoc-init.js")}"></script>
</body></html>
"""


def _html(text: str, redoc_page: bool) -> Response:
    return Response(text, headers=_page_headers(redoc_page),
                    media_type="text/html; charset=utf-8")


async def swagger_ui_page(request: Request) -> Response:
    """``GET /api`` and ``GET /docs``: Swagger UI on ``/openapi.json``."""
    return _html(swagger_page(await _assets()), redoc_page=False)


async def reference(request: Request) -> Response:
    """``GET /reference``: the Redoc reference of ``/openapi.json``."""
    return _html(reference_page(await _assets()), redoc_page=True)


def routes() -> list[Route]:
    """The docs pages and their assets (the ``/openapi.json`` route is the app's)."""
    return [
        Route("/api", swagger_ui_page, methods=["GET"], name="docs_swagger_ui"),
        Route("/docs", swagger_ui_page, methods=["GET"], name="docs"),
        Route("/reference", reference, methods=["GET"], name="docs_reference"),
        Route(STATIC_PREFIX + "{name}", asset, methods=["GET"], name="docs_asset"),
    ]
