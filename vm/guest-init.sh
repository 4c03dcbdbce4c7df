#!/bin/bash
# guest-init.sh - PID 1 inside the VM, exec'd by the initramfs after
# switch_root into the host's root filesystem (9p read-only + tmpfs overlay,
# so the guest sees every host path; guest writes are thrown away).
# The kernel command line gives us (as environment variables):
#   qvm_out    host dir shared read-write at the same path: job.sh in, rc out
#   qvm_kmods  host path of the guest kernel's lib/modules tree
#   qvm_rdma   comma list of soft RDMA devices to create: siw, rxe
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
say() { echo "vm: $*"; }
# Power off whatever happens, so the host never waits for the timeout.
trap 'sync; echo o > /proc/sysrq-trigger; sleep 60' EXIT

mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 qvm_out "$qvm_out" \
  || { say "cannot mount $qvm_out"; exit 1; }
mkdir -p /dev/pts /dev/shm /lib/modules
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount --bind "$qvm_kmods" /lib/modules
# Memory registration pins pages: the default 8 MiB memlock is far too small.
ulimit -l unlimited
ip link set lo up

# No udev in the guest: load the user-space access modules by hand.
modprobe -a ib_uverbs rdma_ucm dummy || { say "modprobe failed"; exit 1; }
add_soft_rdma() {  # module link-type rdma-dev netdev ip
  # rdma_cm does not resolve over lo and picks the device by IP, so each
  # device gets its own dummy netdev and subnet.
  ip link add "$4" type dummy && ip addr add "$5/24" dev "$4" && ip link set "$4" up &&
    modprobe "$1" && rdma link add "$3" type "$2" netdev "$4"
}
for kind in ${qvm_rdma//,/ }; do
  case $kind in
    siw) add_soft_rdma siw siw siw0 siwnet0 10.77.1.1 || { say "siw setup failed"; exit 1; }
         export QVM_SIW_DEV=siw0 QVM_SIW_ADDR=10.77.1.1 ;;
    rxe) add_soft_rdma rdma_rxe rxe rxe0 rxenet0 10.77.2.1 || { say "rxe setup failed"; exit 1; }
         export QVM_RXE_DEV=rxe0 QVM_RXE_ADDR=10.77.2.1 ;;
    *)   say "unknown rdma kind $kind"; exit 1 ;;
  esac
done
say "up $(cut -d' ' -f1 /proc/uptime)s, kernel $(uname -r), $(rdma link | awk '{printf "%s(%s) ", $2, $NF}')"

bash "$qvm_out/job.sh" </dev/null
rc=$?
echo "$rc" > "$qvm_out/rc"
say "job exit status $rc at $(cut -d' ' -f1 /proc/uptime)s"
