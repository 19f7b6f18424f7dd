"""Docker HEALTHCHECK of the project images: no curl needed, only the standard library.

    python /opt/mesh/healthcheck.py [URL]

URL defaults to ``$HEALTHCHECK_URL``, else ``http://127.0.0.1:<port>/healthz`` with the
port from ``GATEWAY_PORT`` or ``PORT`` (the order the gateway reads them in). ``tcp://host:port``
only checks that a connection opens (Locust workers, which serve no HTTP). Exit 0 when
healthy, 1 with one line saying why.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request

TIMEOUT = 2.5


def default_url() -> str:
    port = os.environ.get("GATEWAY_PORT") or os.environ.get("PORT") or "8080"
    return os.environ.get("HEALTHCHECK_URL") or f"http://127.0.0.1:{port}/healthz"


def check(url: str) -> str | None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "tcp":
        try:
            with socket.create_connection((parts.hostname, parts.port or 0), timeout=TIMEOUT):
                return None
        except OSError as exc:
            return f"{url}: {exc}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as answer:
            return None if 200 <= answer.status < 300 else f"{url}: HTTP {answer.status}"
    except urllib.error.HTTPError as exc:
        return f"{url}: HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return f"{url}: {exc}"


def main() -> int:
    url = sys.argv[1] if len(sys.argv) > 1 else default_url()
    problem = check(url)
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
