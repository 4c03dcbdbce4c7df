#!/bin/bash
# run.sh - boot a fresh throw-away guest (prepared by setup.sh) with soft RDMA
# devices and run one command in it, in the current directory, as root.
# The command's output comes back on stdout and its exit status becomes
# run.sh's (124: the VM timed out, 125: the VM reported no status).
#
# usage: vm/run.sh [-t timeout_s] [-m mem_MB] [-c cpus] [-r siw,rxe] -- cmd [args...]
#
# In the guest: siw0 on dummy netdev siwnet0 = 10.77.1.1/24 and rxe0 on
# rxenet0 = 10.77.2.1/24, advertised to the command as QVM_SIW_DEV,
# QVM_SIW_ADDR, QVM_RXE_DEV and QVM_RXE_ADDR.  Host variables named in
# QVM_PASSENV (space separated) are passed in.  The host's / is visible
# read-only under a throw-away writable overlay.  QVM_ACCEL=kvm|tcg|auto
# (auto: kvm only if /dev/kvm is writable and the CPU shows vmx/svm; note
# that on the project's machines KVM cannot boot a stock kernel, so CI
# sets tcg).
set -uo pipefail
VMDIR=${QUARTET_VM_DIR:-/var/cache/quartet-vm}
usage() { sed -n '2,18s/^# \{0,1\}//p' "$0" >&2; exit 2; }
timeout_s=600 mem=1024 cpus=2 rdma=siw,rxe
while getopts t:m:c:r:h o; do
  case $o in t) timeout_s=$OPTARG;; m) mem=$OPTARG;; c) cpus=$OPTARG;; r) rdma=$OPTARG;; *) usage;; esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || usage
[ -r "$VMDIR/kernel" ] || { echo "vm/run: run vm/setup.sh first ($VMDIR/kernel missing)" >&2; exit 125; }

OUT=$(mktemp -d "${TMPDIR:-/tmp}/quartet-vm.XXXXXX")
trap 'rm -rf "$OUT"' EXIT
{
  printf 'cd %q || exit 126\n' "$PWD"
  for v in ${QVM_PASSENV:-}; do
    [ -n "${!v+x}" ] && printf 'export %s=%q\n' "$v" "${!v}"
  done
  printf 'exec'; printf ' %q' "$@"; printf '\n'
} > "$OUT/job.sh"

accel=${QVM_ACCEL:-tcg}
if [ "$accel" = auto ]; then
  if [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; then accel=kvm; else accel=tcg; fi
fi
case $accel in
  kvm) acc=(-accel kvm -cpu host) ;;
  # thread=multi: one host thread per guest CPU, much faster than the default.
  *)   acc=(-accel tcg,thread=multi) ;;
esac

# clocksource=tsc: under TCG the guest kernel distrusts its TSC and falls
# back to HPET, where every clock read is an emulated MMIO access (about
# 2 us; 0.2 us with the TSC). Real servers read the TSC, and perftest reads
# it directly, while Go's runtime and time.Now go through the kernel's
# clocksource: on HPET the guest overcharged every Go program (rxe0 read
# latency against ib_read_lat: 0.80x on HPET, 0.92x on the TSC).
timeout -k 5 "$timeout_s" qemu-system-x86_64 "${acc[@]}" -smp "$cpus" -m "$mem" \
  -nodefaults -no-user-config -display none -serial stdio -no-reboot \
  -kernel "$VMDIR/kernel" -initrd "$VMDIR/initrd.img" \
  -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
  -virtfs "local,path=$OUT,mount_tag=qvm_out,security_model=none" \
  -append "console=ttyS0 quiet panic=-1 clocksource=tsc tsc=reliable rdinit=/init qvm_init=$VMDIR/guest-init.sh qvm_out=$OUT qvm_kmods=$VMDIR/kroot/lib/modules qvm_rdma=$rdma" \
  </dev/null | sed -u 's/\r$//'
qrc=${PIPESTATUS[0]}
if [ -s "$OUT/rc" ]; then exit "$(cat "$OUT/rc")"; fi
echo "vm/run: no exit status from the guest (qemu/timeout status $qrc)" >&2
[ "$qrc" = 124 ] && exit 124
exit 125
