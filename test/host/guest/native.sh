#!/bin/sh
# In the guest: Warden natively as the systemd service of deploy/warden.service (Delegate=yes), checked
# with test/host/checks.ts; and, first, F1 and F5 of the deployment issue: without a delegated cgroup
# Warden refuses to start, says what to set, and touches nothing.
set -u
. "$(dirname "$0")/lib.sh"
KEY=host-test-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
URL=http://127.0.0.1:8000
versions
# nsjail is packaged by neither Debian nor Ubuntu: the guest has the building host's, when it had one
if command -v nsjail >/dev/null; then
  DRIVER=nsjail
else
  DRIVER=bwrap
  info "SKIPPED: the native checks with nsjail (the host that built this guest has no /usr/local/bin/nsjail); JAIL=auto runs bubblewrap"
fi
install -d -m 0700 /etc/warden
printf 'CODE_API_KEY=%s\n' "$KEY" >/etc/warden/warden.env
chmod 0600 /etc/warden/warden.env

step "F5: Warden started from this ssh login, which lives in $(cut -d: -f3 /proc/self/cgroup)"
before=$(find /sys/fs/cgroup/system.slice/ssh.service -type d | sort)
if out=$(CODE_API_KEY=$KEY DATA_DIR=/tmp/warden-f5 timeout 600 "$REPO/bin/warden" start 2>&1); then
  fail "F5: Warden started inside ssh.service"
elif printf '%s\n' "$out" | grep -q 'belongs to the systemd unit ssh.service, which has Delegate=no'; then
  pass "F5: refused, naming ssh.service and what to set"
else
  fail "F5: refused for another reason: $out"
fi
[ "$before" = "$(find /sys/fs/cgroup/system.slice/ssh.service -type d | sort)" ] \
  && pass "F5: ssh.service's cgroup is untouched" || fail "F5: ssh.service's cgroup changed"

step "F1: Warden as a service without Delegate=yes"
if out=$(systemd-run --unit=warden-undelegated --wait --pipe --collect -p EnvironmentFile=/etc/warden/warden.env \
    -p Environment=DATA_DIR=/tmp/warden-f1 "$REPO/bin/warden" start 2>&1); then
  fail "F1: an undelegated service started"
elif printf '%s\n' "$out" | grep -q 'warden-undelegated.service, which has Delegate=no'; then
  pass "F1: refused at start, saying to set Delegate=yes (instead of being stopped at the first OOM kill)"
else
  fail "F1: refused for another reason: $out"
fi

step "the service of deploy/warden.service"
install -m 0644 "$REPO/deploy/warden.service" /etc/systemd/system/warden.service
systemctl daemon-reload
systemctl start warden
if wait_ready "$URL" 900; then
  pass "native: ready (self-test passed) as $(systemctl show -p Delegate -p OOMPolicy -p KillMode warden | tr '\n' ' ')"
  run_checks "native systemd service" "$URL" "$KEY" "$DRIVER"
else
  fail "native: not ready"
  journalctl -u warden --no-pager | tail -40
fi
state=$(systemctl show -p ActiveState --value warden)
restarts=$(systemctl show -p NRestarts --value warden)
[ "$state" = active ] && [ "$restarts" = 0 ] \
  && pass "native: still active and never restarted after the OOM kills and fork bombs" \
  || fail "native: ActiveState=$state NRestarts=$restarts"

step "warden doctor, in a delegated transient unit"
out=$(systemd-run --wait --pipe --collect -p Delegate=yes -p EnvironmentFile=/etc/warden/warden.env \
  -p Environment=DATA_DIR=/tmp/warden-doctor "$REPO/bin/warden" doctor 2>&1)
printf '%s\n' "$out"
# the guest installs Python and Bash only, not every language's runtime: the doctor's "! languages"
# warning is expected here (the container phases check the full image's)
if doctor_ok "$out" '^! languages: '; then
  pass "native: doctor all ✓ (but the languages this guest does not install)"
else
  fail "native: doctor"
fi

step "graceful stop"
systemctl stop warden
result=$(systemctl show -p Result --value warden)
left=$(find /sys/fs/cgroup/system.slice -maxdepth 1 -name 'warden.service' | wc -l)
[ "$result" = success ] && [ "$left" = 0 ] && pass "native: stopped cleanly, its cgroup removed" \
  || fail "native: stop result $result, cgroup left: $left"

# (not the double-fork heartbeat test: it wants three beats within 0.5 s, which emulation does not give)
step "F4: attack tests on processes, both drivers, from a delegated unit (the helpers must find the cgroups)"
# (a server there starts two zygotes and runs its self-test under emulation: minutes, not the 90 s allowed
# on a real machine; and a fork bomb takes longer than the suite's 4 s time limit to reach pids.max. The
# tests chosen here assert containment, not time)
if systemd-run --wait --pipe --collect -p Delegate=yes --working-directory="$REPO" -E TEST_SERVER_START_TIMEOUT_MS=600000 -E ATTACK_TIMEOUT_MS=60000 \
    node --import tsx --test --test-concurrency=1 --test-reporter=spec \
    --test-name-pattern='fork bomb|thread bomb|nohup' test/attacks/resources.test.ts; then
  pass "native: fork bomb, thread bomb and leftover-process attack tests on cgroup v2"
else
  fail "native: attack tests"
fi

printf '\nRESULT native: %s\n' "$([ "$FAILURES" = 0 ] && echo PASS || echo "FAIL ($FAILURES)")"
exit "$FAILURES"
