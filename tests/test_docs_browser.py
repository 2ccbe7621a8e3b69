"""The docs pages in a real browser: Debian's headless chromium, driven over the DevTools
protocol (a websocket; the ``websockets`` package comes with ``uvicorn[standard]``),
against a real ``strictgate serve``.

Swagger UI (``/api``, ``/docs``) lists the endpoints and an operation expands to show its
example request; Redoc (``/reference``) renders the operations with their samples. On every
page: no script error, no Content-Security-Policy violation, and no request leaves the
service's origin (the pages work offline).

Skipped, saying why, where chromium is not installed (``.ci/run`` installs it when it can).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from strictgate.embedded import free_port
from tests.serve_proc import Serve, Serves

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--remote-debugging-port=0",
]
WAIT_S = 60


class Browser:
    """One headless chromium with one page, driven over the DevTools protocol."""

    def __init__(self, profile: Path) -> None:
        self.proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.events: list[dict[str, Any]] = []
        self._next_id = 0
        port = self._devtools_port(profile)
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page = next(t for t in targets if t["type"] == "page")
        self._stack = ExitStack()
        self.ws: ClientConnection = self._stack.enter_context(
            connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10))
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")

    def _devtools_port(self, profile: Path) -> int:
        # chromium writes the port it picked (--remote-debugging-port=0) into the profile
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"chromium exited with {self.proc.returncode}")
            if active.exists() and active.read_text().strip():
                return int(active.read_text().split()[0])
            time.sleep(0.1)
        raise AssertionError("chromium did not open its DevTools port")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command; its result (events that arrive meanwhile are kept)."""
        self._next_id += 1
        self.ws.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=WAIT_S))
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                result: dict[str, Any] = message["result"]
                return result
            self.events.append(message)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, what: str) -> Any:
        """Poll ``expression`` until it is truthy; its value."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; page text: "
                             f"{self.evaluate('document.body.innerText')[:2000]!r}")

    def open(self, url: str) -> None:
        """Navigate to ``url``, forgetting the previous page's events."""
        self.events.clear()
        self.call("Page.navigate", url=url)

    def problems(self) -> list[str]:
        """Script errors, console errors (CSP violations among them) and failed loads."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(str(params["exceptionDetails"])[:500])
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                found.append(str(params["args"])[:500])
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(params["entry"]["text"][:500])
            elif method == "Network.loadingFailed" and not params.get("canceled"):
                found.append(f"load failed: {params.get('errorText')}")
        return found

    def requested(self) -> list[str]:
        """URLs the page requested."""
        return [e["params"]["request"]["url"] for e in self.events
                if e.get("method") == "Network.requestWillBeSent"]

    def close(self) -> None:
        """Close the connection and end chromium (its own process group)."""
        try:
            self._stack.close()
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(10)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    """A headless chromium, or a skip saying why there is none."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"chromium is not installed ({CHROMIUM}): the docs pages are not checked "
                    "in a browser; install it with `apt-get install chromium` (.ci/run does "
                    "when it runs as root)")
    chromium = Browser(tmp_path / "chromium-profile")
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture
def service(tmp_path: Path, serves: Serves, redis_url: str) -> Serve:
    """A real ``strictgate serve`` on the shared Redis (no worker: nothing is ingested)."""
    return serves.start(tmp_path / "var", free_port(), REDIS_URL=redis_url,
                        STRICTGATE_RUN_WORKER="0").wait_healthy()


def _assert_clean(browser: Browser, service: Serve) -> None:
    assert browser.problems() == []
    origin = service.base + "/"
    elsewhere = [url for url in browser.requested()
                 if not url.startswith((origin, "data:", "blob:", "about:"))]
    assert elsewhere == [], "the page loads files from elsewhere: it would not work offline"


_SWAGGER_PATHS = ("Array.from(document.querySelectorAll('.opblock-summary-path'))"
                  ".map(e => e.getAttribute('data-path'))")


def _expand(browser: Browser, method: str, path: str) -> str:
    """Click an operation of Swagger UI open; the text of its body once it shows."""
    block = (f"Array.from(document.querySelectorAll('.opblock-{method}')).find(b => "
             f"b.querySelector('.opblock-summary-path').getAttribute('data-path') === "
             f"{json.dumps(path)})")
    assert browser.evaluate(f"!!{block}"), f"{method} {path} is not listed"
    browser.evaluate(f"{block}.querySelector('.opblock-summary-control').click()")
    text: str = browser.wait_for(
        f"{block}.querySelector('.opblock-body') && {block}.innerText.includes('Example')"
        f" && {block}.innerText", f"{method} {path} to expand")
    return text


@pytest.mark.parametrize("page", ["/api", "/docs"])
def test_swagger_ui_lists_the_endpoints_and_expands_an_example(
    browser: Browser, service: Serve, page: str,
) -> None:
    browser.open(service.base + page)
    paths = browser.wait_for(f"{_SWAGGER_PATHS}.length > 15 && {_SWAGGER_PATHS}",
                             "Swagger UI to list the operations")
    documented = httpx.get(service.base + "/openapi.json", timeout=10).json()["paths"]
    assert set(paths) == set(documented)
    assert {"/events/logs", "/events/metrics/batch", "/datasets/{dataset_id}"} <= set(paths)

    text = _expand(browser, "post", "/events/logs")
    # Operyn's own example request and answer
    assert "Upstream timeout connecting to auth-service" in text
    assert "f47ac10b-58cc-4372-a567-0e02b2c3d479" in text
    assert "x-organization-id" in text
    for header in ("X-Quota-Limit", "X-Quota-Remaining", "X-Quota-Reset", "X-Request-Id"):
        assert header in text

    text = _expand(browser, "post", "/datasets/{dataset_id}")
    assert "billing-service" in text and "signup_at" in text  # Loguro's example record
    _assert_clean(browser, service)


def test_swagger_ui_try_it_out_calls_the_service(browser: Browser, service: Serve) -> None:
    browser.open(service.base + "/api")
    browser.wait_for(f"{_SWAGGER_PATHS}.includes('/healthz')", "Swagger UI to list /healthz")
    _expand(browser, "get", "/healthz")
    block = ("Array.from(document.querySelectorAll('.opblock-get')).find(b => b.querySelector("
             "'.opblock-summary-path').getAttribute('data-path') === '/healthz')")
    browser.evaluate(f"{block}.querySelector('.try-out__btn').click()")
    browser.wait_for(f"!!{block}.querySelector('.execute')", "the Execute button")
    browser.evaluate(f"{block}.querySelector('.execute').click()")
    live = browser.wait_for(
        f"{block}.querySelector('.live-responses-table') && "
        f"{block}.querySelector('.live-responses-table').innerText", "the live answer")
    assert "200" in live and '"status": "ok"' in live
    assert "x-request-id" in live.lower()
    _assert_clean(browser, service)


def test_reference_renders_the_operations_with_their_samples(
    browser: Browser, service: Serve,
) -> None:
    browser.open(service.base + "/reference")
    text = browser.wait_for(
        "document.querySelector('[data-section-id]') && document.body.innerText.includes("
        "'Ingest a batch of deployment events') && document.body.innerText",
        "Redoc to render the operations")
    for summary in ("Ingest a log event", "Ingest a metric event", "Ingest one record",
                    "Read a dataset's records in receipt order"):
        assert summary in text
    assert "/events/logs" in text and "/datasets/{dataset_id}" in text
    # the request samples of the right-hand panel
    assert "Upstream timeout connecting to auth-service" in text
    assert "request_latency_p99" in text
    _assert_clean(browser, service)
