#!/bin/sh
# In the guest: Warden's image built from the Dockerfile (test/host/guest/build-image.sh) and run with
# exactly the README's `docker run` block (every line of it but `docker build`, which the stand-ins
# replace), checked with test/host/checks.ts; the same with JAIL=bwrap (F3); the compose file's Warden
# service; and what the container can reach of the host's cgroups.
# Usage: container.sh [v2|v1]   (the cgroup mode the guest was booted in)
set -u
. "$(dirname "$0")/lib.sh"
MODE=${1:-v2}
CG=${MODE#v}
URL=http://127.0.0.1:8000
versions
cd "$REPO"

step "the image"
if [ -f "$IMAGE_BUILD_LOG" ]; then
  # run.sh started the build in the background at boot, beside the native phase: wait for it
  while [ ! -f "$IMAGE_BUILD_LOG.done" ]; do sleep 10; done
  cat "$IMAGE_BUILD_LOG"
  status=$(cat "$IMAGE_BUILD_LOG.done")
elif ! docker image inspect warden >/dev/null 2>&1; then
  sh test/host/guest/build-image.sh "$REPO"
  status=$?
else
  status=0
fi
case $status in
  0) ;;
  3) printf '\nRESULT container-%s: SKIPPED (no nsjail for the image: see above)\n' "$MODE"; exit 0 ;;
  *) fail "image: the build failed"; exit 1 ;;
esac

# the full image offers all 13 languages, and the checks run each (the slim target: whatever it has)
if docker run --rm --entrypoint test warden -x /usr/bin/rustc; then
  export WARDEN_LANGUAGES=13
fi

# the README's block: the ```sh fence that holds `docker run -d --name warden`, minus `docker build`
readme_block () {
  awk '/^```sh$/ { inside = 1; block = ""; next } /^```$/ { if (inside && block ~ /docker run -d --name warden /) { printf "%s", block; exit } inside = 0; next } inside { block = block $0 "\n" }' README.md \
    | grep -v '^docker build '
}
BLOCK=$(readme_block)
[ -n "$BLOCK" ] || { fail "README: no docker run block found"; exit 1; }
KEY=$(echo "$BLOCK" | sed -n 's/.*-e CODE_API_KEY=\([^ ]*\).*/\1/p')
info "README block run as is:"
echo "$BLOCK" | sed 's/^/    /'

# Compose v2, as the compose file asks: Debian 12's docker-compose is 1.29, which hands
# systempaths=unconfined to the daemon as is (refused: measured here). Debian 13's docker-compose package
# is Compose v2 (a Go program needing only libc), installed from trixie for this one package.
compose_v2 () {
  docker-compose version 2>/dev/null | grep -q 'version v\?2\.' && return 0
  echo 'deb http://deb.debian.org/debian trixie main' >/etc/apt/sources.list.d/trixie-compose.list
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose/trixie >/dev/null
  status=$?
  rm -f /etc/apt/sources.list.d/trixie-compose.list
  [ "$status" = 0 ] || return 1
  info "compose: $(docker-compose version | head -1), Debian 13's docker-compose package (Debian 12 has only Compose 1.29)"
}

compose_service () {
  step "$MODE: the compose file's Warden service"
  if ! compose_v2; then
    fail "$MODE compose: no Compose v2 (Debian 13's docker-compose package did not install)"
    return
  fi
  # the README's compose steps: the keys go into deploy/.env (LibreChat's own settings would too)
  printf 'WARDEN_API_KEY=%s\nWARDEN_JUPYTER_TOKEN=%s-jupyter\n' "$KEY" "$KEY" >deploy/.env
  if (cd deploy && docker-compose -p wardentest up -d --no-build warden); then
    id=$(cd deploy && docker-compose -p wardentest ps -q warden)
    ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$id")
    if wait_ready "http://$ip:8000" 900 "$id"; then
      run_checks "$MODE compose service" "http://$ip:8000" "$KEY" nsjail "$CG"
    else
      fail "$MODE compose service: not ready"
      docker logs "$id" 2>&1 | tail -20
    fi
  else
    fail "$MODE compose: docker-compose up failed"
  fi
  (cd deploy && docker-compose -p wardentest down -v >/dev/null 2>&1)
  rm -f deploy/.env
}
# `container.sh v2 compose`: only this step (the image and the README's block as above)
if [ "${2:-}" = compose ]; then
  apparmor_parser -r -W deploy/warden.apparmor   # as the compose file's comment says (the block does it otherwise)
  compose_service
  printf '\nRESULT container-%s compose: %s\n' "$MODE" "$([ "$FAILURES" = 0 ] && echo PASS || echo "FAIL ($FAILURES)")"
  exit "$FAILURES"
fi

step "$MODE: the README's docker run line (nsjail)"
docker rm -f warden >/dev/null 2>&1
if sh -ec "$BLOCK" && wait_ready "$URL" 900 warden; then
  pass "$MODE container: ready with the README's line"
  run_checks "$MODE container, the README's line" "$URL" "$KEY" nsjail "$CG"
  out=$(docker exec warden /app/bin/warden doctor 2>&1)
  status=$?
  printf '%s\n' "$out"
  info "$MODE container: the doctor exited with $status"
  # the slim target (HOST_TEST_IMAGE_TARGET=slim) has Python and Bash only: its languages warning is expected
  expected='^$'
  [ "${WARDEN_LANGUAGES:-}" = 13 ] || expected='^! languages: '
  if doctor_ok "$out" "$expected"; then
    pass "$MODE container: docker exec warden /app/bin/warden doctor, all ✓$([ "$expected" = '^$' ] || echo ' (but the languages the slim image leaves out)')"
  else
    fail "$MODE container: doctor"
  fi
  step "$MODE: what the container's root can do to the host's cgroups"
  # as the server would, from inside its view, and as a `docker exec` shell outside it
  view="python3 -I /app/deploy/private-cgroups.py"
  if docker exec warden sh -c 'ls /sys/fs/cgroup' | grep -qx 'system.slice'; then
    info "$MODE container: the container's /sys/fs/cgroup shows the host's whole tree"
  fi
  if docker exec warden sh -c 'touch /sys/fs/cgroup/probe' 2>/dev/null; then
    fail "$MODE container: a docker exec shell can write the cgroup tree Docker mounted"
  else
    pass "$MODE container: a docker exec shell cannot write the cgroup tree Docker mounted (read-only)"
  fi
  if [ "$CG" = 2 ]; then
    seen=$(docker exec warden $view sh -c 'ls /sys/fs/cgroup | grep -c "\.slice$"; cat /sys/fs/cgroup/memory.max' 2>&1)
    info "$MODE container: inside the server's view: slices seen, own memory.max: $(echo "$seen" | tr '\n' ' ')"
    if docker exec warden $view sh -c 'echo max > /sys/fs/cgroup/memory.max' 2>/dev/null; then
      fail "$MODE container: the server's view can raise the container's own memory.max"
    else
      pass "$MODE container: the server's view cannot raise the container's own limits (nsdelegate)"
    fi
  else
    # v1 has no nsdelegate: the container's own cgroup is the root of the server's view; writing its limit
    # back unchanged shows whether the server could raise it
    if docker exec warden $view sh -c 'v=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes) && echo $v > /sys/fs/cgroup/memory/memory.limit_in_bytes' 2>/dev/null; then
      info "$MODE container: the server's view CAN rewrite the container's own memory limit (v1 has no nsdelegate)"
    else
      info "$MODE container: the server's view cannot rewrite the container's own memory limit"
    fi
  fi
  state=$(docker inspect -f '{{.State.Status}} restarts={{.RestartCount}} health={{.State.Health.Status}}' warden)
  probes=$(docker inspect -f '{{range .State.Health.Log}}{{.ExitCode}}:{{.Output}}|{{end}}' warden)
  case $state in
    "running restarts=0 health=healthy") pass "$MODE container: $state" ;;
    "running restarts=0 health=unhealthy")
      # Docker's probe (a node process, 5 s timeout) can miss its deadline under emulation while the server
      # answers /health/ready at once (its log shows each probe's request)
      if [ -n "$probes" ] && ! echo "$probes" | tr '|' '\n' | grep -v '^$' | grep -v '^0:' | grep -qv 'exceeded timeout'; then
        info "$MODE container: $state, only from probes that exceeded Docker's 5 s timeout (emulation): $probes"
      else
        fail "$MODE container: $state; probes: $probes"
      fi ;;
    *) fail "$MODE container: $state; probes: $probes" ;;
  esac
else
  fail "$MODE container: the README's line did not get ready"
fi
docker logs warden 2>&1 | tail -5
docker rm -f warden >/dev/null 2>&1

step "$MODE: the same line with JAIL=bwrap (F3)"
BWRAP_BLOCK=$(echo "$BLOCK" | sed 's/--name warden /--name warden-bwrap -e JAIL=bwrap /; s/-p 8000:8000/-p 8001:8000/; s/-v warden-data:/-v warden-data-bwrap:/')
if sh -ec "$BWRAP_BLOCK" && wait_ready http://127.0.0.1:8001 900 warden-bwrap; then
  run_checks "$MODE container with JAIL=bwrap" http://127.0.0.1:8001 "$KEY" bwrap "$CG"
else
  fail "$MODE container with JAIL=bwrap: not ready"
fi
docker logs warden-bwrap 2>&1 | tail -5
docker rm -f warden-bwrap >/dev/null 2>&1

# The options the README compares, each started, smoke-tested and probed for what the container's root
# can write on the host. Probes write a value back unchanged, so they change nothing.
probe_host_writes () {
  name=$1
  if docker exec "$name" sh -c 'v=$(cat /proc/sys/kernel/core_pattern) && printf "%s\n" "$v" > /proc/sys/kernel/core_pattern' 2>/dev/null; then
    info "$MODE option $name: the container's root CAN write host sysctls (kernel.core_pattern)"
  else
    info "$MODE option $name: the container's root cannot write host sysctls (kernel.core_pattern)"
  fi
  # opening for writing is where the kernel and AppArmor decide; nothing is written
  if docker exec "$name" python3 -c 'import os; os.close(os.open("/proc/sysrq-trigger", os.O_WRONLY))' 2>/dev/null; then
    info "$MODE option $name: the container's root CAN open /proc/sysrq-trigger for writing (reboot or crash the host)"
  else
    info "$MODE option $name: the container's root cannot open /proc/sysrq-trigger for writing"
  fi
  target=/sys/fs/cgroup/system.slice/ssh.service/pids.max
  [ "$CG" = 1 ] && target=/sys/fs/cgroup/pids/system.slice/ssh.service/pids.max
  if docker exec "$name" sh -c "v=\$(cat $target) && echo \$v > $target" 2>/dev/null; then
    info "$MODE option $name: the container's root CAN rewrite other cgroups' limits ($target)"
  else
    info "$MODE option $name: the container's root cannot reach other cgroups ($target)"
  fi
}

# try_option <name> <port> <sed expression turning the README's line into the option>
try_option () {
  line=$(echo "$BLOCK" | grep '^docker run ' | sed "s/--name warden /--name $1 /; s/-p 8000:8000/-p $2:8000/; s/-v warden-data:/-v $1-data:/; $3")
  docker rm -f "$1" >/dev/null 2>&1
  if sh -ec "$line" >/dev/null && wait_ready "http://127.0.0.1:$2" 900 "$1" && smoke "http://127.0.0.1:$2" "$KEY"; then
    pass "$MODE option $1: ready, runs code, a memory bomb is stopped"
  else
    info "$MODE option $1: does not work"
    docker logs "$1" 2>&1 | tail -5
  fi
  probe_host_writes "$1"
  docker rm -f "$1" >/dev/null 2>&1
}

step "$MODE: the options compared in README and SECURITY.md"
try_option warden-readme 8010 's/x/x/'
try_option warden-unconfined 8011 's/apparmor=warden/apparmor=unconfined/'
try_option warden-host-cgroups 8012 's/ warden$/ --cgroupns=host -v \/sys\/fs\/cgroup:\/sys\/fs\/cgroup:rw warden/'
try_option warden-no-setfcap 8013 's/ --cap-add SETFCAP//'

compose_service

printf '\nRESULT container-%s: %s\n' "$MODE" "$([ "$FAILURES" = 0 ] && echo PASS || echo "FAIL ($FAILURES)")"
exit "$FAILURES"
