#!/usr/bin/env bash
# Builds the local base image (Debian bookworm minbase + python3 + python3-venv +
# ca-certificates) with debootstrap, for machines that cannot pull python:3.12-slim.
# Skipped when the image exists already (MESH_REBUILD_BASE=1 rebuilds it).
#
# The image has what every project Dockerfile expects of its BASE_IMAGE: `python3` (3.11
# here) with the venv module and its bundled pip (ensurepip), `sh`, and a CA bundle.
#
# Linux only, by nature (debootstrap, chroot): it is for the machines that cannot pull; run by
# infra/compose/images.py (`--base local`) when the image is missing.
#
# `build-base.sh IMAGE fat` makes the *fat* base of lesson-fat-image instead: the chapter's
# "Mistake 1", a full Debian with the build tools (debootstrap's buildd variant, gcc, git,
# curl, the Python headers), its apt lists, docs and man pages kept, as `FROM debian` +
# `apt-get install build-essential ...` leaves them. Cached the same way.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
MESH_HOME="${MESH_HOME:-$REPO_ROOT/.mesh}"
DOCKER_STATE="$MESH_HOME/docker"
step() { printf '==> %s\n' "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }
die() {
  printf 'build-base: %s\n' "$*" >&2
  exit 1
}
image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

IMAGE="${1:-mesh-demo/base:bookworm}"
KIND="${2:-slim}"
SUITE=bookworm
PACKAGES=python3,python3-venv,ca-certificates
VARIANT=minbase
case "$KIND" in
slim) ;;
fat)
  VARIANT=buildd
  PACKAGES="$PACKAGES,build-essential,gcc,python3-dev,git,curl,wget,procps,less,openssh-client"
  ;;
*) die "unknown kind $KIND (slim or fat)" ;;
esac

if image_exists "$IMAGE" && [[ "${MESH_REBUILD_BASE:-0}" != 1 ]]; then
  note "base image $IMAGE exists (MESH_REBUILD_BASE=1 rebuilds it)"
  exit 0
fi

# The Debian mirror this machine's apt uses, so the build needs no other network.
debian_mirror() {
  local uri=""
  if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    # deb822: the URIs of the stanza whose Suites name the release itself (not -security).
    uri="$(awk -v suite="$SUITE" '
      /^URIs:/ { uris = $2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) found = 1 }
      /^$/ { if (found && uris != "") { print uris; exit } found = 0; uris = "" }
      END { if (found && uris != "") print uris }
    ' /etc/apt/sources.list.d/debian.sources | head -n1)"
  fi
  if [[ -z "$uri" && -f /etc/apt/sources.list ]]; then
    uri="$(awk -v suite="$SUITE" '$1 == "deb" && $3 == suite { print $2; exit }' /etc/apt/sources.list)"
  fi
  echo "${MESH_DEBIAN_MIRROR:-${uri:-http://deb.debian.org/debian}}"
}

if ! command -v debootstrap >/dev/null 2>&1; then
  [[ "$(id -u)" == 0 ]] || die "debootstrap is missing and this user is not root to install it"
  step "installing debootstrap (apt-get)"
  mkdir -p "$DOCKER_STATE"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap \
    >"$DOCKER_STATE/apt-debootstrap.log" 2>&1; then
    apt-get update -qq >>"$DOCKER_STATE/apt-debootstrap.log" 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap \
      >>"$DOCKER_STATE/apt-debootstrap.log" 2>&1 ||
      die "apt-get install debootstrap failed: $(tail -n1 "$DOCKER_STATE/apt-debootstrap.log")"
  fi
fi

mirror="$(debian_mirror)"
work="$(mktemp -d "${TMPDIR:-/tmp}/mesh-base.XXXXXX")"
root="$work/rootfs"
log="$DOCKER_STATE/debootstrap-$KIND.log"
mkdir -p "$DOCKER_STATE"
cleanup() {
  # debootstrap mounts /proc and /sys in the target while it runs; never delete through them.
  local m
  awk -v r="$root" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

step "debootstrap $SUITE $VARIANT + $PACKAGES from $mirror (log: ${log#"$REPO_ROOT"/})"
started=$SECONDS
if ! debootstrap --variant="$VARIANT" --include="$PACKAGES" "$SUITE" "$root" "$mirror" \
  >"$log" 2>&1; then
  die "debootstrap failed: $(grep -E 'E:|W:' "$log" | tail -n1)"
fi
note "rootfs ready after $((SECONDS - started))s"

# Slim it down: package caches and lists, docs and man pages nobody reads in a container.
# (The fat base keeps them, as the mistake does; only the downloaded .debs go.)
rm -f "$root"/var/cache/apt/archives/*.deb
[[ "$KIND" == fat ]] || rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
  "$root"/usr/share/locale/* \
  "$root"/var/log/*.log "$root"/var/cache/debconf/*-old
# apt inside derived images (the redis image) uses the same mirror.
echo "deb $mirror $SUITE main" >"$root/etc/apt/sources.list"
# ensurepip must be there: every project Dockerfile creates its venv with `python3 -m venv`.
chroot "$root" python3 -c 'import ensurepip, venv' ||
  die "the rootfs has no ensurepip: python3-venv did not install"

step "importing the rootfs as $IMAGE"
tar --numeric-owner -C "$root" -c . | docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' \
  --change "LABEL mesh.demo/base-build-seconds=$((SECONDS - started))" \
  --message "debootstrap --variant=$VARIANT --include=$PACKAGES $SUITE" \
  - "$IMAGE" >/dev/null
note "$IMAGE: $(docker image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}') after $((SECONDS - started))s"
