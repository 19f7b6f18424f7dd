"""The smallest useful upstream for gateway benchmarks: a fixed JSON answer, no middleware.

A heavier upstream would be the bottleneck of all three set-ups alike and hide the proxies'
own cost.
"""

from __future__ import annotations

import argparse

from aiohttp import web

# ``loadtests.bench_gateway``'s open-loop steps stamp each request with its slot in the
# schedule; answering it back lets wrk time a request from when it was due (wrk2's way).
DUE_HEADER = "X-Bench-Due"
BODY = b'{"sku": "SKU-001", "name": "Benchmark widget", "price": "9.99", "available": 100}'


async def answer(request: web.Request) -> web.Response:
    # The open-loop driver's schedule stamp comes back so it can time from the slot (below).
    due = request.headers.get(DUE_HEADER)
    headers = {DUE_HEADER: due} if due is not None else None
    return web.Response(body=BODY, content_type="application/json", headers=headers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_get("/healthz", answer)
    app.router.add_get("/{tail:.*}", answer)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
