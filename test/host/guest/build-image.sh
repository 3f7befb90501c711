#!/bin/sh
# In the guest: build Warden's image from the repository's Dockerfile, with local stand-ins for the base
# images this network cannot pull (made by test/host/build-guest.sh from Debian packages):
#   debian:bookworm-slim, node:20-bookworm-slim  `docker import` of debootstrap tarballs (+ node for the second)
#   the nsjail build stage                       only when GitHub cannot be reached from here: an image holding
#                                                the host's nsjail binary replaces that one stage; every other
#                                                line of the Dockerfile is used unchanged (checked below)
# The classic builder (DOCKER_BUILDKIT=0) ignores the `# syntax=` line, so no frontend image is pulled.
set -eu
REPO=${1:-/opt/warden}
STANDINS=/var/lib/warden-host-test
say () { printf '[build-image] %s\n' "$*" >&2; }

docker image inspect debian:bookworm-slim >/dev/null 2>&1 \
  || docker import "$STANDINS/debian-bookworm-slim.tar" debian:bookworm-slim >/dev/null
docker image inspect node:20-bookworm-slim >/dev/null 2>&1 \
  || docker import --change 'ENV NODE_EXTRA_CA_CERTS=/usr/local/share/ca-certificates/host-extra-ca.pem' \
       --change 'CMD ["node"]' "$STANDINS/node-20-bookworm-slim.tar" node:20-bookworm-slim >/dev/null
say "stand-ins: debian:bookworm-slim and node:20-bookworm-slim imported from debootstrap tarballs (NODE_EXTRA_CA_CERTS: this network's CA, for npm)"

DOCKERFILE="$REPO/Dockerfile"
if git ls-remote https://github.com/google/nsjail.git HEAD >/dev/null 2>&1 \
   || curl -fsS -m 20 -o /dev/null https://github.com/google/nsjail; then
  say "GitHub is reachable: the nsjail stage builds the pinned upstream release"
elif [ ! -f "$STANDINS/nsjail-local.tar" ]; then
  say "SKIPPED: GitHub is not reachable and the host that built this guest has no /usr/local/bin/nsjail, so the"
  say "Dockerfile's nsjail stage cannot be built here: no image, no container phase"
  exit 3
else
  docker image inspect warden-host-test/nsjail-local >/dev/null 2>&1 \
    || docker import "$STANDINS/nsjail-local.tar" warden-host-test/nsjail-local >/dev/null
  DOCKERFILE=/tmp/Dockerfile.local-nsjail
  # everything from the second FROM on is the repository's Dockerfile, byte for byte
  awk 'BEGIN { n = 0 } /^FROM / { n++ } n >= 2' "$REPO/Dockerfile" >/tmp/Dockerfile.rest
  grep -q '^FROM [^ ]* AS nsjail$' "$REPO/Dockerfile" || { say "the Dockerfile has no 'AS nsjail' stage"; exit 1; }
  { echo 'FROM warden-host-test/nsjail-local AS nsjail'; cat /tmp/Dockerfile.rest; } >"$DOCKERFILE"
  tail -n +2 "$DOCKERFILE" | cmp -s - /tmp/Dockerfile.rest || { say "stand-in Dockerfile differs beyond the nsjail stage"; exit 1; }
  say "GitHub is NOT reachable: the nsjail build stage is replaced by the host's /usr/local/bin/nsjail (an image"
  say "with that binary alone); every other stage is the repository's Dockerfile unchanged"
fi
# HOST_TEST_IMAGE_TARGET=slim: the Dockerfile's slim target (Python and Bash) instead of the default full
# one, whose 13 language runtimes take far longer to install under emulation; the server, entry point and
# everything the container's privileges concern are the same in both
target_args=""
if [ -n "${HOST_TEST_IMAGE_TARGET:-}" ]; then
  target_args="--target $HOST_TEST_IMAGE_TARGET"
  say "NOT the README's image: the Dockerfile's $HOST_TEST_IMAGE_TARGET target (HOST_TEST_IMAGE_TARGET), tagged warden"
fi
say "docker build (classic builder) of $REPO"
started=$(date +%s)
# shellcheck disable=SC2086
if ! DOCKER_BUILDKIT=0 docker build $target_args -f "$DOCKERFILE" -t warden "$REPO" >/tmp/docker-build.log 2>&1; then
  tail -30 /tmp/docker-build.log >&2
  say "docker build failed after $(( $(date +%s) - started )) s"
  exit 1
fi
# (grep -c exits 1 when it counts none: a build without a cached step is no failure)
# (FROM lines are steps too, but never "Using cache": they are not counted)
steps=$(grep '^Step ' /tmp/docker-build.log | grep -vc ' : FROM ' || true)
cached=$(grep -c 'Using cache' /tmp/docker-build.log || true)
say "image warden built in $(( $(date +%s) - started )) s, $(docker image inspect -f '{{.Size}}' warden | awk '{ printf "%.2f GB", $1 / 1e9 }'): $((steps - cached)) of $steps steps run, $cached from the layer cache of earlier runs (test/host/run.sh)"
