#!/usr/bin/env bash
# Stops and removes the containers and the network of the compose runtime (`make down`).
# Volumes (Kafka, Redis, Prometheus, Grafana data) stay, unless --volumes (`make clean`).
# The files and project come from what compose-up.sh recorded in .mesh/compose/state.env.
set -euo pipefail
SCRIPT="compose-down"
# shellcheck source=infra/docker/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

volumes=()
case "${1:-}" in
  "") ;;
  -v | --volumes) volumes=(-v) ;;
  *) die "usage: compose-down.sh [--volumes]" ;;
esac

COMPOSE_INFRA=images
COMPOSE_ENV_DIR=""
if [[ -f "$COMPOSE_STATE" ]]; then
  # shellcheck disable=SC1090
  source "$COMPOSE_STATE"
fi
if ! engine_answers; then
  note "no docker engine answers: nothing of the compose runtime can be running"
  exit 0
fi
read -r -a compose <<<"$(compose_cmd)" || die "neither docker-compose nor 'docker compose' is installed"
mapfile -t files < <(compose_file_args "$COMPOSE_INFRA")

# `down` parses the files, which name the secret env files: stand-ins when they are gone.
env_dir="${COMPOSE_ENV_DIR:-$MESH_HOME/compose}"
if [[ ! -f "$env_dir/gateway.env" ]]; then
  env_dir="$(mktemp -d)"
  trap 'rm -rf "$env_dir"' EXIT
  for f in gateway services grafana; do : >"$env_dir/$f.env"; done
fi

step "docker-compose -p $COMPOSE_PROJECT down${volumes:+ (volumes too)}"
# Every profile, so Locust and the observability stand-outs go as well.
MESH_COMPOSE_ENV_DIR="$env_dir" "${compose[@]}" -p "$COMPOSE_PROJECT" "${files[@]}" \
  --profile load --profile observability down --remove-orphans "${volumes[@]}"
[[ ${#volumes[@]} -gt 0 ]] && rm -f "$COMPOSE_STATE"
left="$(docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT")"
[[ -z "$left" ]] || die "containers of $COMPOSE_PROJECT are still there: $(words "$left")"
note "stopped${volumes:+; volumes removed}"
