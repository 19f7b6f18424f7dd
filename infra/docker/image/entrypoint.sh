#!/bin/sh
# Entry point of the project images: pick the address this container advertises, then hand
# over to the command (exec: the app is PID 1 and gets SIGTERM from `docker stop` itself).
#
# Consul's HTTP check and the gateway dial ADVERTISE_ADDRESS. With `docker-compose --scale`
# every replica needs its own, reachable from the other containers: the container's IP on
# its network is exactly that. Set ADVERTISE_ADDRESS to override it.
set -eu
if [ -z "${ADVERTISE_ADDRESS:-}" ]; then
  ADVERTISE_ADDRESS="$(hostname -i 2>/dev/null | cut -d' ' -f1 || true)"
  if [ -z "$ADVERTISE_ADDRESS" ]; then
    ADVERTISE_ADDRESS="$(hostname)"
  fi
  export ADVERTISE_ADDRESS
fi
exec "$@"
