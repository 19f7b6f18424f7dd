#!/usr/bin/env bash
# Stops the dockerd that ensure-engine.sh started (its pid is in .mesh/docker/dockerd.pid);
# an engine started any other way is left alone.
set -euo pipefail
SCRIPT="stop-engine"
# shellcheck source=infra/docker/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PIDFILE="$DOCKER_STATE/dockerd.pid"
[[ -f "$PIDFILE" ]] || { note "no dockerd started by ensure-engine.sh"; exit 0; }
pid="$(cat "$PIDFILE")"
if ! kill -0 "$pid" 2>/dev/null || [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" != dockerd ]]; then
  rm -f "$PIDFILE"
  note "dockerd $pid is gone already"
  exit 0
fi
step "stopping dockerd (pid $pid)"
kill -TERM "$pid"
for _ in $(seq 60); do
  kill -0 "$pid" 2>/dev/null || { rm -f "$PIDFILE"; note "dockerd stopped"; exit 0; }
  sleep 0.5
done
die "dockerd $pid did not stop within 30s"
