#!/usr/bin/env bash
# Builds the project images (and, with --local-infra, the stand-ins of docker-compose.test.yml)
# with BuildKit where the docker CLI drives it, else the legacy builder:
#
#   infra/docker/build-images.sh [--base IMAGE|local] [--local-infra] [NAME...]
#
#   --base IMAGE   BASE_IMAGE of every Dockerfile (default: $BASE_IMAGE, else python:3.12-slim)
#   --base local   build the debootstrap base (build-base.sh, cached) and use it
#   --local-infra  also build the stand-ins: tansu, redis, consul-dev
#   NAME...        only these (orders inventory payments notifications gateway locust
#                  tansu redis consul-dev)
#
# The work is infra/compose/images.py's (the same code `meshctl up` builds with); this file
# only finds a Python for it: the project's venv, else python3.
set -eu
root="$(cd "$(dirname "$0")/../.." && pwd)"
python="$root/.venv/bin/python"
[ -x "$python" ] || python=python3
cd "$root"
exec "$python" -m infra.compose.images "$@"
