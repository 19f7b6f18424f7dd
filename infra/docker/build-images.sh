#!/usr/bin/env bash
# Builds the project images (and, with --local-infra, the stand-ins for the infrastructure
# images that docker-compose.test.yml uses) with the legacy builder or BuildKit alike.
#
#   infra/docker/build-images.sh [--base IMAGE|local] [--local-infra] [NAME...]
#
#   --base IMAGE   BASE_IMAGE of every Dockerfile (default: $BASE_IMAGE, else python:3.12-slim)
#   --base local   build the debootstrap base (build-base.sh, cached) and use it
#   --local-infra  also build tansu, redis and consul-dev (FROM the same base)
#   NAME...        only these (orders inventory payments notifications gateway locust
#                  tansu redis consul-dev)
#
# Images are tagged mesh-demo/<name>:<version of pyproject.toml>. The builder stage is the
# same in every project Dockerfile, so the first build makes the wheels and the others reuse
# them from the layer cache. pip inside the build uses the host's index settings (read from
# `pip config list` and PIP_* variables; file:// indexes are left out, a container cannot
# read them) and the host's CA bundle (networks that re-sign TLS), and the build runs with
# --network host, so it reaches what the host reaches.
set -euo pipefail
SCRIPT="build-images"
# shellcheck source=infra/docker/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PROJECT_IMAGES=(orders inventory payments notifications gateway locust)
INFRA_IMAGES=(tansu redis consul-dev)

base="${BASE_IMAGE:-python:3.12-slim}"
local_infra=0
names=()
while (($#)); do
  case "$1" in
    --base) base="${2:?--base needs an image or 'local'}"; shift 2 ;;
    --local-infra) local_infra=1; shift ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) names+=("$1"); shift ;;
  esac
done
if ((${#names[@]} == 0)); then
  names=("${PROJECT_IMAGES[@]}")
  ((local_infra)) && names+=("${INFRA_IMAGES[@]}")
fi

dockerfile_of() {
  case "$1" in
    orders | inventory | payments | notifications) echo "services/$1/Dockerfile" ;;
    gateway) echo gateway/Dockerfile ;;
    locust) echo loadtests/Dockerfile ;;
    tansu | redis | consul-dev) echo "infra/docker/images/$1/Dockerfile" ;;
    *) return 1 ;;
  esac
}
for name in "${names[@]}"; do
  dockerfile_of "$name" >/dev/null || die "unknown image '$name'"
done

engine_answers || die "no docker engine answers (run infra/docker/ensure-engine.sh)"

if [[ "$base" == local ]]; then
  "$REPO_ROOT/infra/docker/build-base.sh"
  base="$BASE_IMAGE_LOCAL"
fi
if ! image_exists "$base"; then
  step "pulling $base"
  docker pull "$base" >/dev/null 2>&1 ||
    die "base image $base is not here and cannot be pulled (use --base local)"
fi

# ---- pip settings of this machine, handed to the build -----------------------------------
pip_setting() {
  # The value of one pip setting: PIP_* variable first, then `pip config list` (any scope).
  local key="$2" value="${!1:-}"
  if [[ -z "$value" ]]; then
    value="$(python3 -m pip config list 2>/dev/null |
      sed -n "s/^[^.]*\.$key='\(.*\)'$/\1/p" | head -n1 || true)"
  fi
  printf '%s' "$value"
}
only_network_urls() {
  # Keep http(s) entries; a file:// index or a local path means nothing inside a container.
  local out=() item
  for item in $1; do
    case "$item" in http://* | https://*) out+=("$item") ;; esac
  done
  printf '%s' "${out[*]:-}"
}
index_url="$(only_network_urls "$(pip_setting PIP_INDEX_URL index-url)")"
extra_index_url="$(only_network_urls "$(pip_setting PIP_EXTRA_INDEX_URL extra-index-url)")"
trusted_host="$(pip_setting PIP_TRUSTED_HOST trusted-host)"
build_args=(--build-arg "BASE_IMAGE=$base")
[[ -n "$index_url" ]] && build_args+=(--build-arg "PIP_INDEX_URL=$index_url")
[[ -n "$extra_index_url" ]] && build_args+=(--build-arg "PIP_EXTRA_INDEX_URL=$extra_index_url")
[[ -n "$trusted_host" ]] && build_args+=(--build-arg "PIP_TRUSTED_HOST=$trusted_host")

# The CA bundle pip trusts on this machine, copied into the build context (.dockerignore
# lets exactly this file through). Without one, the Dockerfiles use the image's own CAs.
ca_source="$(pip_setting PIP_CERT cert)"
[[ -z "$ca_source" && -f /etc/ssl/certs/ca-certificates.crt ]] &&
  ca_source=/etc/ssl/certs/ca-certificates.crt
mkdir -p "$DOCKER_STATE"
if [[ -n "$ca_source" && -f "$ca_source" ]]; then
  cp "$ca_source" "$DOCKER_STATE/pip-ca.crt"
else
  rm -f "$DOCKER_STATE/pip-ca.crt"
fi

version="$(project_version)"
[[ -n "$version" ]] || die "cannot read the version from pyproject.toml"
step "building ${#names[@]} images (mesh-demo/*:$version) FROM $base"
note "pip index: ${index_url:-PyPI}${extra_index_url:+ + $extra_index_url}"

# The legacy builder prints every step; BuildKit would need buildx on new clients. Either way
# the log of each build goes to .mesh/docker/build-<name>.log, shown when a build fails.
export DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-0}"
total_start=$SECONDS
for name in "${names[@]}"; do
  dockerfile="$(dockerfile_of "$name")"
  image="$MESH_IMAGE_PREFIX/$name:$version"
  log="$DOCKER_STATE/build-$name.log"
  started=$SECONDS
  if ! docker build --network host "${build_args[@]}" -f "$REPO_ROOT/$dockerfile" \
    -t "$image" "$REPO_ROOT" >"$log" 2>&1; then
    tail -n 25 "$log" >&2
    die "building $image failed (full log: ${log#"$REPO_ROOT"/})"
  fi
  size="$(docker image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}')"
  note "$image  $size  ($(elapsed_since "$started"))"
done
note "all images built in $(elapsed_since "$total_start")"
