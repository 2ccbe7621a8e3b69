"""One API process of ``strictgate serve`` with ``STRICTGATE_API_PROCESSES``
(:mod:`strictgate.process_group`): the app with the worker off, served by uvicorn on the
listening socket its parent made and passed down (``python -m strictgate.api_process FD``),
on the Redis of ``REDIS_URL`` (the parent's embedded server when it runs one).

The parent made every start-up check; this process owns nothing: no data-dir lock, no
valkey, no usage flush.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Sequence

from strictgate.cli import configure_logging
from strictgate.server import check_cap, raise_file_limit, run_uvicorn, uvicorn_server
from strictgate.settings import load_settings


def main(argv: Sequence[str] | None = None) -> int:
    """Serve on the inherited listening socket whose descriptor is ``argv[0]`` until
    SIGINT/SIGTERM; 0, or 3 when the app did not start."""
    args = sys.argv[1:] if argv is None else argv
    sock = socket.socket(fileno=int(args[0]))
    settings = load_settings()
    configure_logging(settings.log_level)
    # the parent raised the limit already (this process inherited it); the same cap
    server = uvicorn_server(settings, check_cap(settings, raise_file_limit()))
    return run_uvicorn(server, sock)


if __name__ == "__main__":
    raise SystemExit(main())
