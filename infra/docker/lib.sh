# shellcheck shell=bash disable=SC2034
# Shared by the scripts of infra/docker (sourced, never run). Callers set `set -euo pipefail`
# and SCRIPT (their name, used as the prefix of every message).

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
MESH_HOME="${MESH_HOME:-$REPO_ROOT/.mesh}"
DOCKER_STATE="$MESH_HOME/docker"

# Image names. The version follows pyproject.toml so a release builds new tags.
MESH_IMAGE_PREFIX="${MESH_IMAGE_PREFIX:-mesh-demo}"
BASE_IMAGE_LOCAL="${MESH_BASE_IMAGE_LOCAL:-$MESH_IMAGE_PREFIX/base:bookworm}"

step() { printf '==> %s\n' "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }
die() {
  printf '%s: %s\n' "${SCRIPT:-infra/docker}" "$*" >&2
  exit 1
}

project_version() {
  sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$REPO_ROOT/pyproject.toml" | head -n1
}

engine_answers() {
  command -v docker >/dev/null 2>&1 && timeout 15 docker info >/dev/null 2>&1
}

# docker-compose v1 (the Debian package) or the v2 plugin; both read the same files.
compose_cmd() {
  if command -v docker-compose >/dev/null 2>&1; then
    echo docker-compose
  elif docker compose version >/dev/null 2>&1; then
    echo "docker compose"
  else
    return 1
  fi
}

image_exists() {
  docker image inspect "$1" >/dev/null 2>&1
}

# "a\nb\nc" -> "a b c", for one-line messages.
words() {
  tr '\n' ' ' <<<"$1" | sed 's/ *$//'
}

elapsed_since() {
  local start="$1"
  echo "$((SECONDS - start))s"
}

# ---- the compose project of `make up` (compose-up.sh / compose-down.sh) ----------------------
COMPOSE_PROJECT="${MESH_COMPOSE_PROJECT:-mesh}"
COMPOSE_STATE="$MESH_HOME/compose/state.env"

# Every compose file of this project's run: docker-compose.yml, plus the override of the local
# stand-ins when the state file says the stack runs on them.
compose_file_args() {
  local infra="${1:-images}"
  printf '%s\n' -f "$REPO_ROOT/docker-compose.yml"
  if [[ "$infra" == local ]]; then
    printf '%s\n' -f "$REPO_ROOT/docker-compose.test.yml"
  fi
}

port_is_free() {
  python3 - "$1" "$2" <<'PY'
import socket, sys
sock = socket.socket()
try:
    sock.bind((sys.argv[1], int(sys.argv[2])))
except OSError:
    sys.exit(1)
finally:
    sock.close()
PY
}
