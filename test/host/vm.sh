# Sourced by test/host/run.sh: boot the guest under QEMU and talk to it over ssh (127.0.0.1 only).
# KVM where it boots; software emulation (TCG) otherwise. On the machines this project is developed on,
# KVM stops at "Probing EDD" (they are virtual machines themselves), so ACCEL=auto falls back to TCG
# when a KVM boot has not reached ssh within KVM_BOOT_TIMEOUT_S.

WORK=${WARDEN_HOST_TEST_DIR:-/var/tmp/warden-host-test}
SSH_PORT=${GUEST_SSH_PORT:-2222}
GUEST_MEMORY=${GUEST_MEMORY:-8G}
GUEST_CPUS=${GUEST_CPUS:-2}
ACCEL=${GUEST_ACCEL:-auto}
KVM_BOOT_TIMEOUT_S=${KVM_BOOT_TIMEOUT_S:-120}
TCG_BOOT_TIMEOUT_S=${TCG_BOOT_TIMEOUT_S:-600}

vm_log () { printf '[host-test %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

guest () {
  ssh -q -p "$SSH_PORT" -i "$WORK/id_ed25519" -o BatchMode=yes -o StrictHostKeyChecking=no \
    -o UserKnownHostsFile=/dev/null -o ConnectTimeout=10 -o ServerAliveInterval=30 root@127.0.0.1 "$@"
}

# vm_start <disk> <extra kernel args>: boots and waits for ssh; sets VM_PID and VM_ACCEL
vm_start () {
  disk=$1
  shift
  cmdline="root=/dev/vda rw console=ttyS0 $*"
  case $ACCEL in
    auto) if [ -w /dev/kvm ]; then accels="kvm tcg"; else accels="tcg"; fi ;;
    *) accels=$ACCEL ;;
  esac
  for accel in $accels; do
    if [ "$accel" = kvm ]; then
      accel_args="-accel kvm -cpu host"
      timeout_s=$KVM_BOOT_TIMEOUT_S
    else
      accel_args="-accel tcg,thread=multi -cpu max"
      timeout_s=$TCG_BOOT_TIMEOUT_S
    fi
    vm_log "booting the guest with $accel ($GUEST_CPUS CPUs, $GUEST_MEMORY): $cmdline"
    : >"$WORK/serial.log"
    # shellcheck disable=SC2086
    nice -n 19 qemu-system-x86_64 $accel_args -smp "$GUEST_CPUS" -m "$GUEST_MEMORY" \
      -kernel "$WORK/vmlinuz" -initrd "$WORK/initrd.img" -append "$cmdline" \
      -drive "file=$disk,if=virtio,format=qcow2,cache=unsafe" \
      -drive "file=$WORK/source.img,if=virtio,format=raw,readonly=on" \
      -drive "file=$WORK/docker-cache.img,if=virtio,format=raw,cache=unsafe" \
      -netdev "user,id=net0,hostfwd=tcp:127.0.0.1:$SSH_PORT-:22" -device virtio-net-pci,netdev=net0 \
      -display none -monitor none -serial "file:$WORK/serial.log" -no-reboot &
    VM_PID=$!
    VM_ACCEL=$accel
    waited=0
    while [ "$waited" -lt "$timeout_s" ]; do
      if ! kill -0 "$VM_PID" 2>/dev/null; then break; fi
      if guest true 2>/dev/null; then
        vm_log "guest up after ${waited}s ($accel)"
        return 0
      fi
      sleep 5
      waited=$((waited + 5))
    done
    vm_log "no ssh after ${waited}s with $accel; last console lines:"
    tail -5 "$WORK/serial.log" >&2
    vm_stop
  done
  return 1
}

vm_stop () {
  [ -n "${VM_PID:-}" ] || return 0
  if kill -0 "$VM_PID" 2>/dev/null; then
    guest 'systemctl poweroff' 2>/dev/null || true
    waited=0
    while kill -0 "$VM_PID" 2>/dev/null && [ "$waited" -lt 60 ]; do sleep 2; waited=$((waited + 2)); done
    kill "$VM_PID" 2>/dev/null || true
  fi
  wait "$VM_PID" 2>/dev/null || true
  VM_PID=
}
