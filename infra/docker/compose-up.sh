#!/usr/bin/env bash
# Starts the platform with Docker Compose (`make up` on the compose runtime), waits until
# every container is healthy and prints where each part answers.
#
#   1. a Docker engine (ensure-engine.sh: installs and starts one as root when none answers);
#   2. the secret env files (gen-env.sh; the API key is the one of .mesh/secrets.json);
#   3. the infrastructure images: the pinned ones of docker-compose.yml when they are here or
#      can be pulled; otherwise (no registry, as on the project's CI machines) the local
#      stand-ins of docker-compose.test.yml (tansu, Debian's redis-server, the development
#      registry), without tracing and dashboards, which is said loudly;
#   4. the project images (build-images.sh; FROM python:3.12-slim when it can be had, else
#      FROM the local debootstrap base);
#   5. `docker-compose -p mesh up -d`, then waits until every container is healthy.
#
# Environment: MESH_COMPOSE_INFRA=auto|images|local (default auto), MESH_COMPOSE_PROFILES
# (e.g. "load" for Locust), MESH_COMPOSE_SCALE (e.g. "orders=2 payments=2"),
# MESH_COMPOSE_WAIT (seconds, default 300), GATEWAY_PORT and the other *_PORT variables of
# docker-compose.yml, MESH_COMPOSE_PROJECT (default mesh).
set -euo pipefail
SCRIPT="compose-up"
# shellcheck source=infra/docker/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

INFRA="${MESH_COMPOSE_INFRA:-auto}"
WAIT="${MESH_COMPOSE_WAIT:-300}"
case "$INFRA" in auto | images | local) ;; *) die "MESH_COMPOSE_INFRA must be auto, images or local, not '$INFRA'" ;; esac
started=$SECONDS

step "docker engine"
"$REPO_ROOT/infra/docker/ensure-engine.sh" || exit 1
read -r -a compose <<<"$(compose_cmd)" || die "neither docker-compose nor 'docker compose' is installed"

step "secrets"
"$REPO_ROOT/infra/docker/gen-env.sh"
env_dir="${MESH_COMPOSE_ENV_DIR:-$MESH_HOME/compose}"

# ---- which infrastructure images ----------------------------------------------------------
can_have() {
  image_exists "$1" || timeout 180 docker pull -q "$1" >/dev/null 2>&1
}
if [[ "$INFRA" != local ]]; then
  step "infrastructure images"
  missing=()
  while read -r image; do
    [[ "$image" == mesh-demo/* || -z "$image" ]] && continue
    # After one failed pull the registry is out of reach: do not wait for every other one.
    if ((${#missing[@]})) && ! image_exists "$image"; then
      missing+=("$image")
    elif ! can_have "$image"; then
      missing+=("$image")
    fi
  done < <("${compose[@]}" -p "$COMPOSE_PROJECT" -f "$REPO_ROOT/docker-compose.yml" config |
    awk '$1 == "image:" { print $2 }' | sort -u)
  if ((${#missing[@]})); then
    [[ "$INFRA" == images ]] && die "cannot pull ${missing[*]} (MESH_COMPOSE_INFRA=images)"
    INFRA=local
    bar="$(printf '!%.0s' {1..78})"
    printf '%s\nNOTE: %s cannot be pulled here.\nRunning the LOCAL STAND-INS instead (docker-compose.test.yml): tansu for Kafka,\nDebian redis-server for Redis, the development registry for Consul; no collector,\nJaeger, Prometheus or Grafana.\n%s\n' \
      "$bar" "${missing[*]}" "$bar" >&2
  else
    INFRA=images
  fi
fi
mapfile -t files < <(compose_file_args "$INFRA")

# ---- project images -------------------------------------------------------------------------
base="${BASE_IMAGE:-python:3.12-slim}"
if ! can_have "$base"; then
  note "$base cannot be pulled: building FROM the local debootstrap base"
  base=local
fi
build=("$REPO_ROOT/infra/docker/build-images.sh" --base "$base")
[[ "$INFRA" == local ]] && build+=(--local-infra)
"${build[@]}"

# ---- up -------------------------------------------------------------------------------------
for spec in "gateway ${GATEWAY_PORT:-8080}" "consul ${CONSUL_UI_PORT:-8500}"; do
  read -r part port <<<"$spec"
  if ! docker ps -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT" | grep -q . &&
    ! port_is_free "${MESH_BIND_ADDRESS:-127.0.0.1}" "$port"; then
    die "port $port ($part) is in use on ${MESH_BIND_ADDRESS:-127.0.0.1}: stop what holds it or set the *_PORT variable (see docker-compose.yml)"
  fi
done
profiles=()
for profile in ${MESH_COMPOSE_PROFILES:-}; do profiles+=(--profile "$profile"); done
scale=()
for s in ${MESH_COMPOSE_SCALE:-}; do scale+=(--scale "$s"); done

mkdir -p "$(dirname "$COMPOSE_STATE")"
{
  echo "# Written by infra/docker/compose-up.sh; read by compose-down.sh."
  echo "COMPOSE_PROJECT=$COMPOSE_PROJECT"
  echo "COMPOSE_INFRA=$INFRA"
  echo "COMPOSE_ENV_DIR=$env_dir"
} >"$COMPOSE_STATE"

label="the pinned infrastructure images"
[[ "$INFRA" == local ]] && label="the local stand-ins"
step "docker-compose -p $COMPOSE_PROJECT up, on $label"
MESH_VERSION="$(project_version)"
export MESH_COMPOSE_ENV_DIR="$env_dir" MESH_VERSION
if ! "${compose[@]}" -p "$COMPOSE_PROJECT" "${files[@]}" "${profiles[@]}" up -d --no-build \
  --remove-orphans "${scale[@]}" 2>"$DOCKER_STATE/compose-up.log"; then
  tail -n 15 "$DOCKER_STATE/compose-up.log" >&2
  die "docker-compose up failed (log: ${DOCKER_STATE#"$REPO_ROOT"/}/compose-up.log)"
fi

# ---- wait until healthy ---------------------------------------------------------------------
step "waiting until every container is healthy (at most ${WAIT}s)"
deadline=$((SECONDS + WAIT))
last=""
while :; do
  states="$(docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT" |
    xargs -r docker inspect --format \
      '{{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} {{.State.ExitCode}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}')"
  failed="$(awk '($2 == "exited" && $3 != 0) || $4 == "unhealthy" { print $1 }' <<<"$states" | sort -u)"
  if [[ -n "$failed" ]]; then
    for service in $failed; do
      "${compose[@]}" -p "$COMPOSE_PROJECT" "${files[@]}" logs --no-color --tail 10 "$service" >&2 || true
    done
    die "not healthy: $(words "$failed") (logs: docker-compose -p $COMPOSE_PROJECT logs SERVICE)"
  fi
  waiting="$(awk '$2 == "running" && $4 != "healthy" && $4 != "none" { print $1 }' <<<"$states" | sort -u)"
  [[ -z "$waiting" ]] && break
  line="waiting for: $(words "$waiting")"
  [[ "$line" != "$last" ]] && note "$line"
  last="$line"
  ((SECONDS < deadline)) || die "still not healthy after ${WAIT}s: $(words "$waiting")"
  sleep 2
done
# Healthy containers are alive; the gateway routes only to replicas whose Consul check on
# /readyz passes. Wait for that too, so the printed URL answers at once.
bind="${MESH_BIND_ADDRESS:-127.0.0.1}"
consul_url="http://$bind:${CONSUL_UI_PORT:-8500}"
unregistered() {
  local service want
  for service in gateway orders inventory payments notifications; do
    want="$(docker ps -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT" \
      --filter "label=com.docker.compose.service=$service" | wc -l)"
    python3 - "$consul_url/v1/health/service/$service?passing" "$want" <<'PY' || echo "$service"
import json, sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=3) as answer:
        sys.exit(0 if len(json.load(answer)) >= int(sys.argv[2]) else 1)
except (OSError, ValueError):
    sys.exit(1)
PY
  done
}
while :; do
  waiting="$(unregistered)"
  [[ -z "$waiting" ]] && break
  ((SECONDS < deadline)) || die "not passing in Consul after ${WAIT}s: $(words "$waiting")"
  sleep 1
done
note "all healthy and passing in Consul after $(elapsed_since "$started")"

# ---- where everything answers ---------------------------------------------------------------
api_key="$(sed -n 's/^GATEWAY_API_KEYS=\([^,]*\).*/\1/p' "$env_dir/gateway.env")"
printf '\nmesh demo on Docker Compose (project %s)\n' "$COMPOSE_PROJECT"
printf '  gateway     http://%s:%s   X-API-Key: %s\n' "$bind" "${GATEWAY_PORT:-8080}" "$api_key"
printf '  Consul UI   http://%s:%s/ui\n' "$bind" "${CONSUL_UI_PORT:-8500}"
if [[ "$INFRA" == images ]]; then
  grafana_pw="$(sed -n 's/^GF_SECURITY_ADMIN_PASSWORD=//p' "$env_dir/grafana.env")"
  printf '  Jaeger      http://%s:%s\n' "$bind" "${JAEGER_UI_PORT:-16686}"
  printf '  Grafana     http://%s:%s   admin / %s\n' "$bind" "${GRAFANA_PORT:-3000}" "$grafana_pw"
  printf '  Prometheus  http://%s:%s\n' "$bind" "${PROMETHEUS_PORT:-9090}"
else
  printf '  (tracing and dashboards are off with the local stand-ins)\n'
fi
if [[ " ${MESH_COMPOSE_PROFILES:-} " == *" load "* ]]; then
  printf '  Locust      http://%s:%s\n' "$bind" "${LOCUST_PORT:-8089}"
else
  printf '  Locust      off (MESH_COMPOSE_PROFILES=load starts it)\n'
fi
printf '  try: curl -H "X-API-Key: %s" http://%s:%s/api/stock\n' "$api_key" "$bind" "${GATEWAY_PORT:-8080}"
