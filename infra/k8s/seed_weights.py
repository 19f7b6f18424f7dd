"""Put a versioned Deployment's starting weights into Consul KV before its pods serve.

    python -m infra.k8s.seed_weights --service orders --file /etc/mesh/traffic/weights.json

The init container of ``orders-v2`` (``k8s/components/canary``) and ``payments-v2``
(``k8s/components/bluegreen``) runs it: the gateway spreads traffic over every passing
version of a service that has no weights in ``mesh/traffic/<service>``, so a v2 that
registered before its weights existed would take its share at once (half of payments' traffic
for a green side meant to stay dark). An init container finishes before the app starts, and so
before it registers in Consul. The key is only created (``cas=0``), never overwritten: weights
a rollout or an operator set stay. Consul is waited for (it may start after the pod), up to
``--wait`` seconds; any failure is one line and a non-zero exit, which the kubelet retries.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from infra.runtime.kv import KVError, MeshKV


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--service", required=True)
    parser.add_argument("--file", required=True, help="the weights, JSON ({'v1': 90, ...})")
    parser.add_argument("--wait", type=float, default=300.0, help="seconds to wait for Consul")
    args = parser.parse_args(argv)
    address = os.environ.get("CONSUL_HTTP_ADDR", "http://127.0.0.1:8500")
    try:
        with open(args.file) as fh:
            weights = json.load(fh)
    except (OSError, ValueError) as exc:
        print(f"seed_weights: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    kv = MeshKV(address, timeout=3.0)
    deadline = time.monotonic() + args.wait
    said = ""
    while True:
        try:
            written = kv.seed_weights(args.service, weights)
            break
        except KVError as exc:
            if "did not answer" not in str(exc):
                print(f"seed_weights: {exc}", file=sys.stderr)
                return 2
            if str(exc) != said:
                print(f"seed_weights: waiting for consul: {exc}", file=sys.stderr, flush=True)
                said = str(exc)
            if time.monotonic() >= deadline:
                print(f"seed_weights: {exc} (gave up after {args.wait:g}s)", file=sys.stderr)
                return 1
            time.sleep(1.0)
    key = f"mesh/traffic/{args.service}"
    if written:
        print(f"seed_weights: {key} = {json.dumps(weights, sort_keys=True)}", flush=True)
    else:
        print(f"seed_weights: {key} exists, kept as it is ({json.dumps(kv.weights(args.service))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
