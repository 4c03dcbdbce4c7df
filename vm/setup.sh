#!/bin/bash
# setup.sh - prepare the throw-away QEMU guest that gives Quartet's tests real
# RDMA devices (soft-iWARP siw0 and Soft-RoCE rxe0) on a Debian 12 host whose
# own kernel has no RDMA.  Run as root.  Idempotent: each step is skipped when
# its product already exists in $QUARTET_VM_DIR, so CI re-runs cost seconds.
#
# Why each step exists:
#  1. apt: qemu, rdma-core user space (the cgo provider links libibverbs and
#     librdmacm; rping and perftest are the independent peers we test
#     against), busybox-static for the initramfs, and the headers matching
#     Debian's current kernel package so siw.ko can be built.
#  2. The guest runs Debian's own kernel (it has RDMA; the host's does not).
#     The .deb is only downloaded and unpacked, never installed.
#  3. Debian's 6.1 kernel is built with CONFIG_RDMA_SIW unset, so siw.ko is
#     built out of tree from linux-source (only drivers/infiniband/sw/siw is
#     unpacked from the tarball).
#  4. The uncompressed vmlinux boots via PVH, skipping the decompressor,
#     which is slow under TCG.  The initramfs mounts the host's / over 9p
#     (read-only, tmpfs overlay) and switch_roots into it, so host-built
#     binaries run in the guest at the same path.
set -euo pipefail

VMDIR=${QUARTET_VM_DIR:-/var/cache/quartet-vm}
HERE=$(cd "$(dirname "$0")" && pwd)
export DEBIAN_FRONTEND=noninteractive
APT=(apt-get -q -o DPkg::Lock::Timeout=600)
say() { echo "vm/setup: $*"; }

pkgs=(qemu-system-x86 kmod busybox-static xz-utils binutils gcc make iproute2
      ibverbs-providers ibverbs-utils rdmacm-utils perftest
      libibverbs-dev librdmacm-dev)
missing() { dpkg-query -W -f='${db:Status-Status}\n' "$@" 2>/dev/null | grep -vc '^installed$' || true; }

# 1. packages (apt-get update only when something is missing: it is the slow part)
if [ -r "$VMDIR/kver" ]; then KVER=$(cat "$VMDIR/kver"); else KVER=; fi
if [ -z "$KVER" ] || [ "$(missing "${pkgs[@]}" "linux-headers-$KVER")" != 0 ] ||
   [ "$(dpkg-query -W "${pkgs[@]}" 2>/dev/null | wc -l)" != "${#pkgs[@]}" ]; then
  "${APT[@]}" update
  KPKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  KVER=${KPKG#linux-image-}
  say "guest kernel $KPKG"
  "${APT[@]}" install -y --no-install-recommends "${pkgs[@]}" "linux-headers-$KVER"
else
  say "packages present (guest kernel $KVER)"
fi
KPKG=linux-image-$KVER
KSERIES=$(echo "$KVER" | cut -d. -f1,2)

if [ -r "$VMDIR/kernel" ] && [ -r "$VMDIR/initrd.img" ] &&
   [ -r "$VMDIR/kroot/lib/modules/$KVER/updates/siw.ko" ] &&
   cmp -s "$HERE/guest-init.sh" "$VMDIR/guest-init.sh" &&
   cmp -s "$HERE/initramfs-init" "$VMDIR/initramfs/init"; then
  say "guest already prepared in $VMDIR"
  exit 0
fi

rm -rf "$VMDIR"
mkdir -p "$VMDIR/dl" "$VMDIR/kroot" "$VMDIR/src" "$VMDIR/initramfs/bin" "$VMDIR/initramfs/modules"
cd "$VMDIR/dl"
KDEBVER=$(apt-cache policy "$KPKG" | awk '/Candidate:/{print $2}')
# As root apt-get download warns "Download is performed unsandboxed": harmless.
"${APT[@]}" download "$KPKG"
"${APT[@]}" download "linux-source-$KSERIES=$KDEBVER" || "${APT[@]}" download "linux-source-$KSERIES"

# 2. kernel and modules, unpacked only
dpkg -x "$KPKG"_*.deb "$VMDIR/kroot"

# 3. siw.ko (and scripts/extract-vmlinux) from the kernel source tarball
dpkg --fsys-tarfile linux-source-"$KSERIES"_*.deb \
  | tar -xO "./usr/src/linux-source-$KSERIES.tar.xz" | xz -dc -T0 \
  | tar -x -C "$VMDIR/src" --strip-components=1 \
      "linux-source-$KSERIES/drivers/infiniband/sw/siw" "linux-source-$KSERIES/scripts/extract-vmlinux"
make -s -C "/usr/src/linux-headers-$KVER" M="$VMDIR/src/drivers/infiniband/sw/siw" CONFIG_RDMA_SIW=m modules
install -D -m 644 "$VMDIR/src/drivers/infiniband/sw/siw/siw.ko" "$VMDIR/kroot/lib/modules/$KVER/updates/siw.ko"
depmod -b "$VMDIR/kroot" "$KVER"

# 4a. uncompressed kernel for PVH boot (fallback: bzImage)
if sh "$VMDIR/src/scripts/extract-vmlinux" "$VMDIR/kroot/boot/vmlinuz-$KVER" > "$VMDIR/vmlinux.tmp"; then
  mv "$VMDIR/vmlinux.tmp" "$VMDIR/kernel"
else
  rm -f "$VMDIR/vmlinux.tmp"; cp "$VMDIR/kroot/boot/vmlinuz-$KVER" "$VMDIR/kernel"
fi

# 4b. initramfs: static busybox, virtio/9p/overlay modules in dependency order, /init
cp /bin/busybox "$VMDIR/initramfs/bin/"
for m in virtio_pci 9pnet_virtio 9p overlay; do
  modprobe -d "$VMDIR/kroot" -S "$KVER" --show-depends "$m"
done | awk '$1=="insmod"{print $2}' | awk '!seen[$0]++' | while read -r ko; do
  cp "$ko" "$VMDIR/initramfs/modules/"; basename "$ko"
done > "$VMDIR/initramfs/modules/order"
install -m 755 "$HERE/initramfs-init" "$VMDIR/initramfs/init"
(cd "$VMDIR/initramfs" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) > "$VMDIR/initrd.img"
install -m 755 "$HERE/guest-init.sh" "$VMDIR/guest-init.sh"

rm -rf "$VMDIR/dl" "$VMDIR/src" "$VMDIR/kroot/boot/vmlinuz-$KVER"
echo "$KVER" > "$VMDIR/kver"
say "done: $(du -sh "$VMDIR" | cut -f1) in $VMDIR"
