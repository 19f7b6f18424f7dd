#!/usr/bin/env bash
# `make test-compose`: the compose runtime end to end on this machine, images included.
#
#   1. a Docker engine: the one that answers, else install/start one (ensure-engine.sh);
#      none possible -> a loud SKIPPED line and exit 0 (the only way this test skips);
#   2. the local base image (debootstrap, cached) and every project image FROM it, plus the
#      local stand-ins for Kafka, Redis and Consul (build-images.sh --local-infra);
#   3. pytest tests/compose: the file checks, then the stack (docker-compose.yml +
#      docker-compose.test.yml): healthchecks, orders CONFIRMED through the gateway on
#      127.0.0.1, a replica stopped under traffic without a failed request, and
#      `down -v --remove-orphans` leaving nothing behind;
#   4. a last check that no container, network or volume of the test project is left, and
#      the dockerd this script started is stopped again (MESH_KEEP_ENGINE=1 keeps it).
#
# Environment: MESH_COMPOSE_PROJECT (default meshtest), PYTEST_ARGS (extra pytest flags).
set -euo pipefail
SCRIPT="test-compose"
# shellcheck source=infra/docker/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PROJECT="${MESH_COMPOSE_PROJECT:-meshtest}"
PYTHON="${PYTHON:-$REPO_ROOT/.venv/bin/python}"
[[ -x "$PYTHON" ]] || PYTHON=python3
started_all=$SECONDS
declare -A took=()

skip() {
  local line="SKIPPED: no Docker engine could be started: $1"
  printf '\n%s\n%s\n%s\n\n' "$(printf '!%.0s' {1..78})" "$line" "$(printf '!%.0s' {1..78})"
  exit 0
}

# ---- 1. engine -------------------------------------------------------------------------------
step "1/4 docker engine"
t=$SECONDS
engine_was_up=0
engine_answers && engine_was_up=1
pidfile="$DOCKER_STATE/dockerd.pid"
had_pidfile=0
[[ -f "$pidfile" ]] && had_pidfile=1
engine_log="$(mktemp)"
set +e
"$REPO_ROOT/infra/docker/ensure-engine.sh" 2>&1 | tee "$engine_log" >&2
engine_rc=${PIPESTATUS[0]}
set -e
if ((engine_rc != 0)); then
  why="$(grep -E '^ensure-engine: ' "$engine_log" | tail -n1 | sed 's/^ensure-engine: //')"
  rm -f "$engine_log"
  skip "${why:-ensure-engine.sh failed (exit $engine_rc)}"
fi
rm -f "$engine_log"
compose_cmd >/dev/null || die "a Docker engine answers but neither docker-compose nor 'docker compose' is installed"
started_engine=0
((engine_was_up == 0 && had_pidfile == 0)) && [[ -f "$pidfile" ]] && started_engine=1
took[engine]=$((SECONDS - t))

# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
  local rc=$?
  # Whatever pytest did, leave nothing of the test project behind.
  local cmd
  if cmd="$(compose_cmd)"; then
    MESH_COMPOSE_ENV_DIR="$DOCKER_STATE/test-env" $cmd -p "$PROJECT" \
      -f "$REPO_ROOT/docker-compose.yml" -f "$REPO_ROOT/docker-compose.test.yml" \
      down -v --remove-orphans -t 10 >/dev/null 2>&1 || true
  fi
  if ((started_engine)) && [[ "${MESH_KEEP_ENGINE:-0}" != 1 ]]; then
    "$REPO_ROOT/infra/docker/stop-engine.sh" || true
  fi
  exit "$rc"
}
trap cleanup EXIT

# ---- 2. images -------------------------------------------------------------------------------
step "2/4 images"
t=$SECONDS
# --base local: the debootstrap base, built once and then taken from the image store.
"$REPO_ROOT/infra/docker/build-images.sh" --base local --local-infra
took[images]=$((SECONDS - t))

# The cleanup's `down` reads the env files the compose file names; give it harmless ones.
mkdir -p "$DOCKER_STATE/test-env"
for f in gateway services grafana; do : >"$DOCKER_STATE/test-env/$f.env"; done

# ---- 3. the tests ----------------------------------------------------------------------------
step "3/4 pytest tests/compose (project $PROJECT)"
t=$SECONDS
logs="$DOCKER_STATE/test-compose.log"
set +e
# shellcheck disable=SC2086
MESH_COMPOSE_STACK=1 MESH_COMPOSE_PROJECT="$PROJECT" MESH_COMPOSE_LOGS="$logs" \
  "$PYTHON" -m pytest "$REPO_ROOT/tests/compose" -p no:cacheprovider -ra \
  --timeout=900 ${PYTEST_ARGS:-}
rc=$?
set -e
took[tests]=$((SECONDS - t))
((rc == 0)) || note "compose logs of the run: ${logs#"$REPO_ROOT"/}"

# ---- 4. nothing left behind ------------------------------------------------------------------
step "4/4 leftovers of project $PROJECT"
left="$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")"
left+="$(docker network ls -q --filter "label=com.docker.compose.project=$PROJECT")"
left+="$(docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT")"
[[ -z "$left" ]] || die "containers, networks or volumes of $PROJECT are left: $left"
note "none"

step "image sizes"
docker images --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' "$MESH_IMAGE_PREFIX/*" | sort | sed 's/^/    /' >&2
step "durations: engine ${took[engine]}s, images ${took[images]}s, tests ${took[tests]}s, total $((SECONDS - started_all))s"
exit "$rc"
