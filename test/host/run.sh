#!/bin/sh
# `npm run test:host`: Warden on a real cgroup v2 host with systemd and Docker, proven in a Debian guest.
#   1. build (or reuse) the guest: test/host/build-guest.sh
#   2. boot it (KVM where it boots, software emulation otherwise: test/host/vm.sh) on a throwaway overlay
#      of the cached disk, with this checkout and its node_modules on a second, read-only disk
#   3. native:       guest/native.sh        Warden as deploy/warden.service; F1 and F5 refusals; attack tests
#   4. container-v2: guest/container.sh v2  the image from the Dockerfile, run with the README's block;
#                                           JAIL=bwrap; the compose file's Warden service
#   5. container-v1: reboot with systemd.unified_cgroup_hierarchy=0, guest/container.sh v1
# Not part of `npm test`: under emulation it takes an hour or more. Results (and the guest's versions) are
# kept in $WARDEN_HOST_TEST_DIR/results/<time>/. HOST_TEST_PHASES picks phases (default: all three);
# HOST_TEST_IMAGE_TARGET=slim builds the Dockerfile's slim target instead of the full image (and says so).
# Runs as root (debootstrap, chroot); QEMU runs under `nice -n 19`; ssh is forwarded on 127.0.0.1 only.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PHASES=${HOST_TEST_PHASES:-native container-v2 container-v1}
. "$HERE/vm.sh"

nice -n 19 sh "$HERE/build-guest.sh"
RESULTS="$WORK/results/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RESULTS"

vm_log "source disk: this checkout (files git knows or would add) and its node_modules"
rm -rf "$WORK/source" && mkdir -p "$WORK/source/warden"
(cd "$REPO" && git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$WORK/source/warden" && cp -a node_modules "$WORK/source/warden/")
COMMIT=$(git -C "$REPO" log -1 --format=%h)
DIRTY=$(git -C "$REPO" status --porcelain --untracked-files=no | grep -q . && echo ' with uncommitted changes' || true)
git -C "$REPO" log -1 --format='%H %s' >"$WORK/source/warden/.host-test-commit"
rm -f "$WORK/source.img"
mkfs.ext4 -q -F -L warden-source -d "$WORK/source" "$WORK/source.img" 3G
rm -rf "$WORK/source"

# Docker's data (its layer cache) on a disk of its own that outlives the run, as a CI runner's cache does:
# the full image's language layer takes far longer to build under emulation than the rest of the test, and
# only the layers after a change are built again. HOST_TEST_FRESH_DOCKER=1 starts from an empty one.
if [ "${HOST_TEST_FRESH_DOCKER:-}" = 1 ] || [ ! -f "$WORK/docker-cache.img" ]; then
  rm -f "$WORK/docker-cache.img"
  mkfs.ext4 -q -F -L docker-cache "$WORK/docker-cache.img" 80G
fi
rm -f "$WORK/run.qcow2"
qemu-img create -q -f qcow2 -b "$WORK/guest.img" -F raw "$WORK/run.qcow2"
trap 'vm_stop' EXIT INT TERM

# /opt/warden: the read-only checkout with a writable overlay (on the guest's disk, so it survives a reboot)
prepare_guest () {
  guest 'set -e; mkdir -p /mnt/src /opt/warden /var/lib/warden-src/upper /var/lib/warden-src/work
    mountpoint -q /mnt/src || mount -o ro /dev/vdb /mnt/src
    mountpoint -q /opt/warden || mount -t overlay overlay -o lowerdir=/mnt/src/warden,upperdir=/var/lib/warden-src/upper,workdir=/var/lib/warden-src/work /opt/warden
    if ! mountpoint -q /var/lib/docker; then
      systemctl stop docker.socket docker.service containerd.service
      mkdir -p /var/lib/docker && mount /dev/vdc /var/lib/docker
      systemctl start containerd.service docker.service
    fi
    # the cache keeps images only: no container, volume or network of an earlier run
    docker ps -aq | xargs -r docker rm -f >/dev/null
    docker volume prune -f >/dev/null && docker network prune -f >/dev/null
    echo "docker layer cache: $(docker images -aq | sort -u | wc -l) images kept from earlier runs, $(df -h --output=used /var/lib/docker | tail -1 | tr -d " ") used"'
}

# run_phase <name> <guest command>: its output is shown and kept; a failing phase does not stop the next
run_phase () {
  vm_log "phase $1"
  if guest "$2" 2>&1 | tee "$RESULTS/$1.log"; then :; fi
}

booted=""
for phase in $PHASES; do
  case $phase in
    native|container-v2) want=v2 ;;
    container-v1) want=v1 ;;
    *) vm_log "unknown phase $phase"; exit 2 ;;
  esac
  if [ "$booted" != "$want" ]; then
    vm_stop
    if [ "$want" = v1 ]; then vm_start "$WORK/run.qcow2" systemd.unified_cgroup_hierarchy=0; else vm_start "$WORK/run.qcow2"; fi
    booted=$want
    echo "accel $VM_ACCEL" >>"$RESULTS/vm.txt"
    prepare_guest >"$RESULTS/prepare-$want.txt"
    cat "$RESULTS/prepare-$want.txt" >>"$RESULTS/vm.txt"
    case " $PHASES " in
      *" container-v"*)
        # the image builds once, on the first boot, beside the native phase: under emulation it takes
        # longer than that phase, and the container phases wait for it (guest/container.sh)
        # (again after a reboot that interrupted it)
        guest 'log=/var/lib/warden-host-test/image-build.log; [ -f $log.done ] || { : >$log
          nohup sh -c "cd /opt/warden && HOST_TEST_IMAGE_TARGET='"${HOST_TEST_IMAGE_TARGET:-}"' nice -n 5 sh test/host/guest/build-image.sh /opt/warden >$log 2>&1; echo \$? >$log.done" </dev/null >/dev/null 2>&1 & }'
        vm_log "image build started in the guest, beside the phases before the containers'"
        ;;
    esac
  fi
  case $phase in
    native) run_phase native 'sh /opt/warden/test/host/guest/native.sh' ;;
    container-v2) run_phase container-v2 'sh /opt/warden/test/host/guest/container.sh v2' ;;
    container-v1) run_phase container-v1 'sh /opt/warden/test/host/guest/container.sh v1' ;;
  esac
done
vm_stop

{
  echo "npm run test:host, $(date -u +%Y-%m-%dT%H:%MZ), checkout $COMMIT$DIRTY, started $(basename "$RESULTS"), $(sort -u "$RESULTS/vm.txt" | tr '\n' ' ')"
  grep -h '^INFO kernel' "$RESULTS"/*.log | sort -u
  grep -h -e '^PASS' -e '^FAIL' -e '^RESULT' -e '^INFO .*\(option\|view\|ready after\|stopped after\|SKIPPED\)' -e '^\[build-image\]' "$RESULTS"/*.log
} | tee "$RESULTS/summary.txt"
phases_run=$(echo "$PHASES" | wc -w)
passed=$(grep -c '^RESULT .*: PASS$' "$RESULTS/summary.txt" || true)
[ "$passed" = "$phases_run" ] && ! grep -q '^FAIL' "$RESULTS/summary.txt"
