# Sourced by the guest scripts: report lines the host collects (PASS/FAIL/INFO), waiting for Warden, the checks.
REPO=${REPO:-/opt/warden}
# where run.sh's background image build writes (and, when it ended, `.done` with its exit status)
IMAGE_BUILD_LOG=/var/lib/warden-host-test/image-build.log
FAILURES=0

step () { printf '\n== %s\n' "$*"; }
pass () { printf 'PASS %s\n' "$*"; }
fail () { printf 'FAIL %s\n' "$*"; FAILURES=$((FAILURES + 1)); }
info () { printf 'INFO %s\n' "$*"; }

# wait_ready <base url> <seconds> [container]: until /health/ready answers 200 (the self-test passed);
# gives up early when the container has stopped
wait_ready () {
  waited=0
  while [ "$waited" -lt "$2" ]; do
    if curl -fs -o /dev/null "$1/health/ready"; then
      info "ready after ${waited}s"
      return 0
    fi
    if [ -n "${3:-}" ] && [ "$(docker inspect -f '{{.State.Running}}' "$3" 2>/dev/null)" != true ]; then
      info "$3 stopped after ${waited}s"
      return 1
    fi
    sleep 5
    waited=$((waited + 5))
  done
  return 1
}

# run_checks <name> <base url> <api key> <driver> [cgroup version]: test/host/checks.ts against a running Warden
run_checks () {
  if (cd "$REPO" && WARDEN_URL=$2 WARDEN_API_KEY=$3 WARDEN_DRIVER=$4 WARDEN_CGROUP_VERSION=${5:-2} \
      node --import tsx --test --test-reporter=spec test/host/checks.ts); then
    pass "$1: the checks (self-test, memory bomb, fork bombs beside normal runs, LibreChat client)"
  else
    fail "$1: the checks"
  fi
}

# a short check of a Warden that is only meant to start: ready, one execution, a memory bomb explained
smoke () {
  out=$(curl -fs -H "x-api-key: $2" -H 'content-type: application/json' \
    -d '{"lang":"py","code":"print(6*7)"}' "$1/v1/exec") || return 1
  # printf, not echo: dash's echo turns the JSON's \n into a newline
  printf '%s\n' "$out" | grep -q '"stdout":"42\\n"' || return 1
  out=$(curl -fs -H "x-api-key: $2" -H 'content-type: application/json' \
    -d '{"lang":"py","code":"x = bytearray(2 * 1024 ** 3)\nx[::4096] = b\"1\" * len(x[::4096])"}' "$1/v1/exec") || return 1
  printf '%s\n' "$out" | grep -q '"oom_killed":true'
}

versions () {
  info "kernel $(uname -r); $(systemctl --version | head -1); docker $(docker version --format '{{.Server.Version}}' 2>/dev/null || echo none); cgroup fs $(stat -fc %T /sys/fs/cgroup); $(date -u +%Y-%m-%d)"
}

# doctor_ok <doctor output> [the one warning expected]: the canary ran and no other line is ✗ or !.
# Two -e patterns, not the bracket [✗!]: outside a UTF-8 locale (an ssh command here) a bracket matches
# bytes, and ✓ shares its first byte with ✗, so every line would count as a failure
doctor_ok () {
  printf '%s\n' "$1" | grep -q '^✓ canary execution' || return 1
  ! printf '%s\n' "$1" | grep -v -e "${2:-^\$}" | grep -q -e '^✗' -e '^!'
}
