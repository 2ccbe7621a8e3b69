"""wrk driving one POST body with several users' API keys, and telling which requests it saw
acknowledged: each request carries its own ``X-Request-Id`` (``<prefix>-<thread>-<n>``), the
``response`` hook keeps the ids of the 202s (strictgate echoes the id), and ``done`` prints
them. So an audit can check each acknowledged request in the sink by its ``__traceId``.

wrk stops at the end of its duration with up to one request per connection in flight: the
server may still admit those, whose 202 nobody reads. They are the only requests that may be
stored and not acknowledged.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

_SCRIPT = """
local tokens = {%(tokens)s}
local body_path = %(body_path)s
local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  local f = io.open(body_path, "rb")
  body = f:read("*a")
  f:close()
  n = 0
  acked = {}
end

function request()
  n = n + 1
  local headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = tokens[(n + tid) %% #tokens + 1],
    ["X-Request-Id"] = string.format("%(prefix)s-%%d-%%d", tid, n),
  }
  return wrk.format("POST", nil, headers, body)
end

function response(status, headers, body)
  if status == 202 then
    acked[#acked + 1] = headers["x-request-id"] or headers["X-Request-Id"] or "?"
  end
end

function done(summary, latency, requests)
  io.write(string.format(
    "RESULT {\\"requests\\": %%d, \\"duration_us\\": %%d, \\"p50_us\\": %%d, " ..
    "\\"p99_us\\": %%d, \\"errors\\": %%d}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout))
  for _, thread in ipairs(threads) do
    for _, id in ipairs(thread:get("acked")) do
      io.write("ACKED " .. id .. "\\n")
    end
  end
end
"""


@dataclass(frozen=True)
class WrkRun:
    """What one wrk run did."""

    requests: int
    """Requests answered (any status)."""
    duration_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    """Connect, read, write and timeout errors."""
    acked: list[str]
    """``X-Request-Id`` of every request answered 202."""


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string of ASCII text is a valid Lua string literal


def write_script(path: Path, body_path: Path, bearer_tokens: list[str], prefix: str) -> Path:
    """The Lua script of a run POSTing ``body_path`` with the Bearer tokens in turn (each
    request the next token), request ids starting with ``prefix``; written to ``path``."""
    if not prefix.replace("-", "").isalnum():
        raise ValueError("the request id prefix must be letters, digits and '-'")
    tokens = ", ".join(_lua_string(f"Bearer {token}") for token in bearer_tokens)
    path.write_text(_SCRIPT % {"tokens": tokens, "body_path": _lua_string(str(body_path)),
                               "prefix": prefix})
    return path


def run_wrk(url: str, script: Path, *, connections: int, duration_s: int,
            threads: int = 1) -> WrkRun:
    """wrk for ``duration_s`` seconds against ``url`` with ``script``."""
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration_s}s",
         "--timeout", "10s", "-s", str(script), url],
        capture_output=True, text=True, check=True).stdout
    result = next(json.loads(x[len("RESULT "):]) for x in out.splitlines()
                  if x.startswith("RESULT "))
    return WrkRun(requests=int(result["requests"]), duration_s=result["duration_us"] / 1e6,
                  p50_ms=result["p50_us"] / 1000, p99_ms=result["p99_us"] / 1000,
                  errors=int(result["errors"]),
                  acked=[x[len("ACKED "):] for x in out.splitlines() if x.startswith("ACKED ")])
