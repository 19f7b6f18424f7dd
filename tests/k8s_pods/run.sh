#!/usr/bin/env bash
# `make test-k8s-pods`: the k8s dev overlay's pods on a real Docker engine, as their pod specs
# say (tests/k8s_pods/test_k8s_pods.py).
#
#   1. a Docker engine: the one that answers, else install/start one (infra/docker/ensure-
#      engine.sh); none possible -> a loud SKIPPED line and exit 0 (the only way this skips);
#   2. the project images and the compose test's stand-ins for Kafka, Redis and Consul
#      (infra/docker/build-images.sh --base local --local-infra: cached, so after
#      `make test-compose` nothing is rebuilt);
#   3. pytest tests/k8s_pods with MESH_K8S_PODS=1; every container and network it makes is
#      labelled meshk8s.run=<id> and removed; a dockerd this script started is stopped again
#      (MESH_KEEP_ENGINE=1 keeps it).
#
# MESH_IMAGE_PREFIX (default mesh-demo) names the images to build and run.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="${PYTHON:-$repo/.venv/bin/python}"
[[ -x "$python" ]] || python=python3
state="${MESH_HOME:-$repo/.mesh}/docker"
started=$SECONDS

engine_up=0
timeout 15 docker info >/dev/null 2>&1 && engine_up=1
had_pid=0
[[ -f "$state/dockerd.pid" ]] && had_pid=1
if ! out="$("$repo/infra/docker/ensure-engine.sh" 2>&1)"; then
  why="$(grep -E '^ensure-engine: ' <<<"$out" | tail -n1 | sed 's/^ensure-engine: //')"
  bar="$(printf '!%.0s' {1..78})"
  printf '\n%s\nSKIPPED: no Docker engine could be started: %s\n%s\n\n' "$bar" "${why:-$out}" "$bar"
  exit 0
fi
started_engine=0
((engine_up == 0 && had_pid == 0)) && [[ -f "$state/dockerd.pid" ]] && started_engine=1
stop_engine() {
  if ((started_engine)) && [[ "${MESH_KEEP_ENGINE:-0}" != 1 ]]; then
    "$repo/infra/docker/stop-engine.sh" || true
  fi
}
trap stop_engine EXIT

echo "==> images (cached when make test-compose built them)" >&2
images_at=$SECONDS
"$repo/infra/docker/build-images.sh" --base local --local-infra
images_took=$((SECONDS - images_at))

echo "==> pytest tests/k8s_pods" >&2
tests_at=$SECONDS
set +e
# shellcheck disable=SC2086
MESH_K8S_PODS=1 "$python" -m pytest "$repo/tests/k8s_pods" -p no:cacheprovider -ra \
  --timeout=600 ${PYTEST_ARGS:-}
rc=$?
set -e
echo "==> durations: images $((images_took))s, tests $((SECONDS - tests_at))s, total $((SECONDS - started))s" >&2
exit "$rc"
