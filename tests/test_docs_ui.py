"""The docs pages over HTTP: ``/api`` and ``/docs`` (Swagger UI), ``/reference`` (Redoc) and
their assets under ``/api/static/``: content types, cache headers, compression, a strict
Content-Security-Policy, and nothing but the asset table reachable. (The pages in a real
browser: test_docs_browser.py.)"""

from __future__ import annotations

import gzip
import re
import socket
from pathlib import Path

import pytest

from strictgate.docs import ASSET_FILES, IMMUTABLE, REVALIDATE
from strictgate.embedded import free_port
from tests.ingest_fixtures import Service
from tests.serve_proc import Serves

PAGES = ("/api", "/docs", "/reference")


def _sources(html: str) -> list[str]:
    """The src/href of every script, stylesheet and icon of a page."""
    return re.findall(r'<(?:script|link)[^>]*?(?:src|href)="([^"]+)"', html)


@pytest.mark.parametrize("page", PAGES)
def test_pages_are_html_under_a_strict_policy(svc: Service, page: str) -> None:
    r = svc.client.get(page)
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["cache-control"] == REVALIDATE
    assert r.headers["x-content-type-options"] == "nosniff"
    policy = dict(d.strip().split(" ", 1) for d in r.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"  # no inline script, no eval
    assert policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    if page != "/reference":  # only Redoc injects <style> elements
        assert policy["style-src"] == "'self'"
    # every script is a file of this service: nothing inline, nothing from elsewhere
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", r.text, re.S)
    assert scripts and all('src="' in attrs and body == "" for attrs, body in scripts)
    sources = _sources(r.text)
    assert sources and all(src.startswith("api/static/") for src in sources)
    assert 'data-spec-url="openapi.json"' in r.text


def test_docs_is_the_swagger_ui_page(svc: Service) -> None:
    """/docs used to dump each operation as raw JSON; it is now the same UI as /api."""
    assert svc.client.get("/docs").text == svc.client.get("/api").text
    assert "swagger-ui-bundle.js" in svc.client.get("/docs").text
    assert "redoc.standalone.js" in svc.client.get("/reference").text


@pytest.mark.parametrize("page", PAGES)
def test_every_asset_a_page_links_is_served_for_a_year(svc: Service, page: str) -> None:
    for src in _sources(svc.client.get(page).text):
        r = svc.client.get("/" + src)
        assert r.status_code == 200, src
        name = src.split("?")[0].rsplit("/", 1)[1]
        assert r.headers["content-type"] == {
            ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
            ".png": "image/png"}[name[name.rindex("."):]]
        assert r.headers["cache-control"] == IMMUTABLE
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.content == ASSET_FILES[name][0].read_bytes()


def test_an_unversioned_asset_is_revalidated_with_its_etag(svc: Service) -> None:
    for url in ("/api/static/swagger-ui-bundle.js", "/api/static/swagger-ui-bundle.js?v=old"):
        r = svc.client.get(url, headers={"Accept-Encoding": "identity"})
        assert r.status_code == 200
        assert r.headers["cache-control"] == REVALIDATE
        etag = r.headers["etag"]
        again = svc.client.get(url, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == etag
        assert svc.client.get(url, headers={"If-None-Match": '"other"'}).status_code == 200


@pytest.mark.parametrize(("accept", "compressed"), [
    ("gzip, deflate, br", True), ("br;q=1.0, gzip;q=0.5", True), ("*", True),
    ("identity", False), ("gzip;q=0", False), ("", False),
])
def test_text_assets_are_gzipped_when_the_client_takes_it(
    svc: Service, accept: str, compressed: bool,
) -> None:
    path, _ = ASSET_FILES["redoc.standalone.js"]
    # httpx would decode gzip itself: read the raw bytes
    with svc.client.stream("GET", "/api/static/redoc.standalone.js",
                           headers={"Accept-Encoding": accept}) as r:
        raw = b"".join(r.iter_raw())
    assert r.headers["vary"] == "Accept-Encoding"
    if compressed:
        assert r.headers["content-encoding"] == "gzip"
        assert len(raw) < path.stat().st_size / 2
        assert gzip.decompress(raw) == path.read_bytes()
    else:
        assert "content-encoding" not in r.headers
        assert raw == path.read_bytes()


def test_an_unknown_asset_is_a_404_in_the_error_grammar(svc: Service) -> None:
    r = svc.client.get("/api/static/swagger-ui-standalone-preset.js")
    assert r.status_code == 404
    assert r.json() == {"success": False, "error": "Not found",
                        "errors": [{"code": "not_found", "field": None, "message": "Not found"}]}


def test_images_are_not_gzipped(svc: Service) -> None:
    r = svc.client.get("/api/static/favicon-32x32.png", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200
    assert "content-encoding" not in r.headers and "vary" not in r.headers


@pytest.mark.parametrize("target", [
    "/api/static/openapi.py",
    "/api/static/__init__.py",
    "/api/static/index.html",
    "/api/static/swagger-ui-standalone-preset.js",  # in the bundle, not in the table
    "/api/static/..%2f..%2fapp.py",
    "/api/static/%2e%2e%2f%2e%2e%2fpyproject.toml",
    "/api/static/..%5c..%5capp.py",
    "/api/static/swagger-init.js%00.png",
    "/api/static/",
    "/api/static/static/swagger-init.js",
])
def test_nothing_outside_the_asset_table_is_served(svc: Service, target: str) -> None:
    r = svc.client.get(target)
    assert r.status_code == 404, target
    assert b"import" not in r.content and b"[project]" not in r.content


def test_dot_segments_do_not_reach_a_file(
    tmp_path: Path, serves: Serves, redis_url: str,
) -> None:
    """Request lines with literal ``..`` segments, as a hostile client sends them (no client
    library normalizing them first), to a real ``strictgate serve``."""
    serve = serves.start(tmp_path / "var", free_port(), REDIS_URL=redis_url,
                         STRICTGATE_RUN_WORKER="0").wait_healthy()
    for target in ("/api/static/../../app.py", "/api/static/../static/../../pyproject.toml",
                   "/api/static/./../../app.py", "/api/static/..%2f..%2fapp.py",
                   "/api/static/%2e%2e/%2e%2e/app.py"):
        with socket.create_connection(("127.0.0.1", serve.port), timeout=10) as sock:
            sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                         .encode())
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.split(b" ", 2)[1] == b"404", (target, answer[:300])
        assert b"import" not in answer and b"[project]" not in answer
