#!/bin/sh
# Build the Debian guest that `npm run test:host` boots (test/host/run.sh), from Debian packages only:
# a debootstrap root filesystem with the distribution kernel, systemd (unified cgroup v2), Docker, AppArmor,
# bubblewrap and the Python data stack, written into a raw ext4 image without a loop device.
# Facts behind each step: ../shared/spec/host-testing.md.
#
# Also builds the stand-ins for the Dockerfile's base images, which cannot be pulled on these machines:
#   debian:bookworm-slim    = `docker import` of a debootstrap minbase tarball
#   node:20-bookworm-slim   = the same plus this host's node at /usr/local/bin/node and npm at
#                             /usr/local/lib/node_modules/npm (as the official image lays them out), and
#                             NODE_EXTRA_CA_CERTS naming this host's extra CA certificates, which npm needs to
#                             reach the registry through this network
#   nsjail build stage      = this host's /usr/local/bin/nsjail, used ONLY if the guest cannot reach GitHub
#                             (test/host/guest/build-image.sh decides and says so)
# and gives the guest this host's nsjail binary for the native run (nsjail is not packaged by Debian).
# The guest is cached in $WARDEN_HOST_TEST_DIR (default /var/tmp/warden-host-test) and rebuilt when this
# script changes. Runs as root (debootstrap, chroot).
set -eu

WORK=${WARDEN_HOST_TEST_DIR:-/var/tmp/warden-host-test}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
IMAGE_SIZE=${GUEST_IMAGE_SIZE:-48G}
HERE=$(cd "$(dirname "$0")" && pwd)
STAMP=$(sha256sum "$0" | cut -c1-16)

# What the guest runs: systemd + ssh + the kernel; Docker (docker.io 20.10) with the AppArmor userspace
# it needs on the Debian kernel; compose; both jail drivers' needs; the data stack the workers preload.
GUEST_PACKAGES="linux-image-amd64 initramfs-tools systemd systemd-sysv udev dbus openssh-server iproute2
 ca-certificates curl procps kmod less e2fsprogs
 docker.io docker-compose apparmor apparmor-utils iptables pigz xz-utils
 bubblewrap util-linux libprotobuf32 libnl-route-3-200
 python3 python3-numpy python3-pandas python3-matplotlib python3-scipy python3-sklearn python3-seaborn
 python3-sympy python3-openpyxl python3-xlsxwriter python3-docx python3-pypdf python3-pil python3-tabulate"

log () { printf '[build-guest] %s\n' "$*" >&2; }

if [ -f "$WORK/guest.img" ] && [ "$(cat "$WORK/guest.stamp" 2>/dev/null)" = "$STAMP" ]; then
  log "guest image is up to date: $WORK/guest.img"
  exit 0
fi
[ "$(id -u)" = 0 ] || { log "run as root (debootstrap and chroot)"; exit 1; }
for tool in debootstrap mkfs.ext4 ssh-keygen node; do
  command -v "$tool" >/dev/null || { log "missing $tool: apt-get install debootstrap e2fsprogs openssh-client"; exit 1; }
done

mkdir -p "$WORK"
ROOT="$WORK/rootfs"
MINBASE="$WORK/minbase"
mounted=""
cleanup () {
  for m in $mounted; do umount -l "$m" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

# 1. a minbase root filesystem: the debian:bookworm-slim stand-in, and the start of the guest
if [ ! -f "$WORK/minbase.done" ]; then
  rm -rf "$MINBASE"
  log "debootstrap --variant=minbase $SUITE"
  debootstrap --variant=minbase "$SUITE" "$MINBASE" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
  cat >"$MINBASE/etc/apt/sources.list" <<SOURCES
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
SOURCES
  rm -rf "$MINBASE"/var/cache/apt/archives/*.deb "$MINBASE"/var/lib/apt/lists/*
  touch "$WORK/minbase.done"
fi

mkdir -p "$WORK/standins"
EXTRA_CA="$WORK/standins/host-extra-ca.pem"
cat /usr/local/share/ca-certificates/*.crt >"$EXTRA_CA" 2>/dev/null || : >"$EXTRA_CA"
NODE_BIN=$(readlink -f "$(command -v node)")
NPM_DIR=$(dirname "$(dirname "$NODE_BIN")")/lib/node_modules/npm

log "stand-in tarballs for debian:bookworm-slim and node:20-bookworm-slim"
tar -C "$MINBASE" --numeric-owner -cf "$WORK/standins/debian-bookworm-slim.tar" .
NODE_STAGE="$WORK/node-standin"
rm -rf "$NODE_STAGE" && cp -a "$MINBASE" "$NODE_STAGE"
mkdir -p "$NODE_STAGE/usr/local/lib/node_modules" "$NODE_STAGE/usr/local/share/ca-certificates"
cp "$NODE_BIN" "$NODE_STAGE/usr/local/bin/node"
cp -a "$NPM_DIR" "$NODE_STAGE/usr/local/lib/node_modules/npm"
ln -s ../lib/node_modules/npm/bin/npm-cli.js "$NODE_STAGE/usr/local/bin/npm"
ln -s ../lib/node_modules/npm/bin/npx-cli.js "$NODE_STAGE/usr/local/bin/npx"
cp "$EXTRA_CA" "$NODE_STAGE/usr/local/share/ca-certificates/host-extra-ca.pem"
tar -C "$NODE_STAGE" --numeric-owner -cf "$WORK/standins/node-20-bookworm-slim.tar" .
# the nsjail build stage's stand-in holds this host's binary alone (see build-image.sh for when it is used)
if [ -x /usr/local/bin/nsjail ]; then
  tar -C / --numeric-owner -cf "$WORK/standins/nsjail-local.tar" usr/local/bin/nsjail
fi

# 2. the guest: minbase + packages, installed in a chroot (services are not started: policy-rc.d)
log "guest root filesystem: installing packages (several minutes)"
rm -rf "$ROOT"
cp -a "$MINBASE" "$ROOT"
for m in proc sys dev dev/pts; do
  case $m in
    proc) mount -t proc proc "$ROOT/proc" ;;
    sys) mount -t sysfs sysfs "$ROOT/sys" ;;
    dev) mount --bind /dev "$ROOT/dev" ;;
    dev/pts) mount --bind /dev/pts "$ROOT/dev/pts" ;;
  esac
  mounted="$ROOT/$m $mounted"
done
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d" && chmod +x "$ROOT/usr/sbin/policy-rc.d"
mkdir -p "$ROOT/usr/local/share/ca-certificates"
cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/" 2>/dev/null || true
# shellcheck disable=SC2086
chroot "$ROOT" /bin/sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(echo $GUEST_PACKAGES) && update-ca-certificates && apt-get clean" \
  >"$WORK/packages.log" 2>&1 || { tail -30 "$WORK/packages.log" >&2; exit 1; }
rm -f "$ROOT/usr/sbin/policy-rc.d"
cleanup; mounted=""

# node (this host's, as in the node stand-in) for Warden itself and its test client
mkdir -p "$ROOT/usr/local/lib/node_modules"
cp -a "$NODE_STAGE/usr/local/." "$ROOT/usr/local/"
# nsjail is packaged by neither Debian nor Ubuntu: the guest runs this host's build natively (its
# runtime libraries are Debian's, installed above); nothing is fetched or built for it here
if [ -x /usr/local/bin/nsjail ]; then cp /usr/local/bin/nsjail "$ROOT/usr/local/bin/nsjail"; fi

# 3. configuration: network by DHCP from QEMU's user-mode network, root by ssh key, serial console
echo warden-guest >"$ROOT/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 warden-guest\n' >"$ROOT/etc/hosts"
echo 'nameserver 10.0.2.3' >"$ROOT/etc/resolv.conf"
echo '/dev/vda / ext4 errors=remount-ro 0 1' >"$ROOT/etc/fstab"
mkdir -p "$ROOT/etc/systemd/network" "$ROOT/root/.ssh" "$ROOT/mnt/src"
printf '[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\n' >"$ROOT/etc/systemd/network/80-dhcp.network"
[ -f "$WORK/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$WORK/id_ed25519"
cp "$WORK/id_ed25519.pub" "$ROOT/root/.ssh/authorized_keys"
chmod 700 "$ROOT/root/.ssh" && chmod 600 "$ROOT/root/.ssh/authorized_keys"
chroot "$ROOT" systemctl enable systemd-networkd ssh docker >/dev/null 2>&1
# nothing in the background competing with the test under emulation
chroot "$ROOT" systemctl mask apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer fstrim.timer >/dev/null 2>&1 || true
mkdir -p "$ROOT/var/lib/warden-host-test"
cp "$WORK/standins/"*.tar "$ROOT/var/lib/warden-host-test/"
cp "$HERE/../../package.json" "$ROOT/var/lib/warden-host-test/built-from-package.json"

KERNEL=$(ls "$ROOT"/boot/vmlinuz-* | sort -V | tail -1)
INITRD=$(ls "$ROOT"/boot/initrd.img-* | sort -V | tail -1)
cp "$KERNEL" "$WORK/vmlinuz" && cp "$INITRD" "$WORK/initrd.img"

# 4. the disk: mkfs.ext4 -d copies a directory into a new file system, no loop device needed
log "writing $WORK/guest.img ($IMAGE_SIZE, sparse)"
rm -f "$WORK/guest.img"
mkfs.ext4 -q -F -L warden-guest -d "$ROOT" "$WORK/guest.img" "$IMAGE_SIZE"
echo "$STAMP" >"$WORK/guest.stamp"
rm -rf "$ROOT" "$NODE_STAGE"
log "done: $WORK/guest.img, kernel $(basename "$KERNEL")"
