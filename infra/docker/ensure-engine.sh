#!/usr/bin/env bash
# Makes sure a Docker engine answers `docker info`, installing and starting one when it can.
#
#   1. an engine answers already (any kind: systemd, Docker Desktop, DOCKER_HOST): done;
#   2. as root on Debian/Ubuntu: apt-get install docker.io docker-compose when dockerd or
#      docker-compose is missing, then start dockerd in the background (log and pid under
#      .mesh/docker/) and wait until it answers.
#
# Exit 0 when an engine answers. Otherwise exit 1 with ONE line on stderr saying why (callers
# such as test-compose.sh show that line). With --check nothing is installed or started.
# The pid of a dockerd this script started is written to .mesh/docker/dockerd.pid, so that
# stop-engine.sh stops that one and nothing else.
set -euo pipefail
SCRIPT="ensure-engine"
# shellcheck source=infra/docker/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WAIT_SECONDS="${MESH_DOCKERD_WAIT:-90}"
LOG="$DOCKER_STATE/dockerd.log"
PIDFILE="$DOCKER_STATE/dockerd.pid"

if engine_answers; then
  note "docker engine answers ($(docker info --format '{{.ServerVersion}}' 2>/dev/null || echo '?'))"
  exit 0
fi
[[ "${1:-}" == "--check" ]] && die "no docker engine answers"

if [[ "$(id -u)" != 0 ]]; then
  die "no docker engine answers and this user is not root, so none can be installed or started"
fi

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v docker >/dev/null 2>&1 || missing+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
if ((${#missing[@]})); then
  command -v apt-get >/dev/null 2>&1 || die "no apt-get here to install ${missing[*]}"
  # shellcheck disable=SC2207
  pkgs=($(printf '%s\n' "${missing[@]}" | sort -u))
  step "installing ${pkgs[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  mkdir -p "$DOCKER_STATE"
  apt-get update -qq >"$DOCKER_STATE/apt.log" 2>&1 || true
  if ! apt-get install -y -qq --no-install-recommends "${pkgs[@]}" iptables \
    >>"$DOCKER_STATE/apt.log" 2>&1; then
    die "apt-get install ${pkgs[*]} failed: $(tail -n1 "$DOCKER_STATE/apt.log")"
  fi
fi
command -v dockerd >/dev/null 2>&1 || die "dockerd is still missing after installing docker.io"

mkdir -p "$DOCKER_STATE"

start_dockerd() {
  # setsid + no inherited descriptors: the daemon outlives this script and never holds the
  # caller's pipes open (a CI step would otherwise wait for it).
  : >"$LOG"
  setsid dockerd "$@" </dev/null >>"$LOG" 2>&1 &
  echo $! >"$PIDFILE"
  local pid deadline
  pid="$(cat "$PIDFILE")"
  deadline=$((SECONDS + WAIT_SECONDS))
  while ((SECONDS < deadline)); do
    if timeout 5 docker info >/dev/null 2>&1; then
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$PIDFILE"
      return 1
    fi
    sleep 1
  done
  kill -TERM "$pid" 2>/dev/null || true
  rm -f "$PIDFILE"
  return 1
}

last_error() {
  grep -iE 'level=(error|fatal)|failed|error' "$LOG" | tail -n1 | cut -c1-300
}

step "starting dockerd (log: ${LOG#"$REPO_ROOT"/})"
started=$SECONDS
if start_dockerd; then
  note "dockerd answers after $(elapsed_since "$started") (pid $(cat "$PIDFILE"))"
  exit 0
fi
first_error="$(last_error)"
# Kernels or sandboxes without the netfilter modules refuse the bridge's NAT rules; without
# them containers still reach each other and published ports still work (userland proxy).
note "dockerd did not come up (${first_error:-no error logged}); retrying without iptables"
if start_dockerd --iptables=false --ip-masq=false; then
  note "dockerd answers without iptables after $(elapsed_since "$started") (pid $(cat "$PIDFILE"))"
  exit 0
fi
die "dockerd did not answer within ${WAIT_SECONDS}s: ${first_error:-$(last_error)}"
