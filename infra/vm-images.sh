#!/usr/bin/env bash
# Builds the project's VM images from Debian packages (reproducibly: fixed times, sorted archives, fixed
# filesystem ids) into DIR (default /opt/edge-platform/images), with their SHA-256 in DIR/SHA256SUMS:
#   edge-vm.kernel   Debian's cloud kernel (linux-image-cloud-amd64)
#   edge-vm.initrd   busybox + the kernel's virtio, fw_cfg, ACPI button and evdev modules + /init (see below)
#   edge-web.qcow2   an ext4 disk whose /start serves /www with busybox httpd on port 80
# A VM of the `vm` platform boots the kernel and initrd with its own qcow2 overlay of an App's image as
# /dev/vda. /init loads the drivers, brings up eth0 on qemu's user network, mounts /dev/vda on /data, reads
# the user data qemu passes through fw_cfg (opt/edge/user-data: the App's command and env, kept out of the
# command line) and runs that command, or /data/start when there is none. The ACPI power button powers the
# guest off (busybox acpid).
set -euo pipefail
OUT=${1:-/opt/edge-platform/images}
export SOURCE_DATE_EPOCH=1700000000 E2FSPROGS_FAKE_TIME=1700000000
for b in apt-get dpkg-deb depmod cpio gzip mkfs.ext4 debugfs qemu-img busybox sha256sum; do
  command -v "$b" >/dev/null || { echo "vm-images.sh: $b missing (infra/install.sh installs it)" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

# The kernel package the cloud-kernel metapackage points at.
pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
[ -n "$pkg" ] || { echo "vm-images.sh: no linux-image-cloud-amd64 in the apt sources" >&2; exit 1; }
apt-get download -q "$pkg" >/dev/null 2>&1 || (chown _apt "$work" 2>/dev/null; apt-get download -q "$pkg" >/dev/null)
dpkg-deb -x ./*.deb kernel
kver=$(ls kernel/lib/modules)
moddir=kernel/lib/modules/$kver
depmod -b "$work/kernel" "$kver"

# initramfs: busybox with every applet, the drivers in load order (dependencies first), /init.
mkdir -p root/bin root/dev root/proc root/sys root/tmp root/data root/lib/modules root/etc
cp "$(command -v busybox)" root/bin/busybox
for a in $(busybox --list); do [ "$a" = busybox ] || ln -s busybox "root/bin/$a"; done
: > root/modules.order
want() { # want MODULE: appends its dependencies, then itself, to the load order
  local path dep
  path=$(awk -F: -v m="/$1.ko" 'index($1, m) > 0 && index($1, m) == length($1) - length(m) + 1 {print $1; exit}' "$moddir/modules.dep")
  [ -n "$path" ] || return 0
  for dep in $(awk -F: -v p="$path" '$1 == p {print $2}' "$moddir/modules.dep"); do
    want "$(basename "$dep" .ko)"
  done
  grep -qx "$(basename "$path")" root/modules.order && return 0
  cp "$moddir/$path" root/lib/modules/
  basename "$path" >> root/modules.order
}
for m in virtio_pci virtio_net virtio_blk qemu_fw_cfg button evdev; do want "$m"; done
# ACPI power button (QMP system_powerdown, how the CRM stops a VM): busybox acpid runs this, and the guest
# powers off at once (qemu then exits).
mkdir -p root/etc/acpi/PWRF
printf '#!/bin/sh\necho "edge-vm: power button, powering off" > /dev/console\npoweroff -f\n' > root/etc/acpi/PWRF/00000080
chmod +x root/etc/acpi/PWRF/00000080
cat > root/init <<'INIT'
#!/bin/sh
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod "/lib/modules/$m"; done
ip link set lo up
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2
mount -t ext4 /dev/vda /data 2>/dev/null
acpid -l /tmp/acpid.log
EDGE_COMMAND=
ud=/sys/firmware/qemu_fw_cfg/by_name/opt/edge/user-data/raw
if [ -r "$ud" ]; then cp "$ud" /tmp/user-data; . /tmp/user-data; rm -f /tmp/user-data; fi
echo "edge-vm: booted, starting the app"
cd /data
if [ -n "$EDGE_COMMAND" ]; then sh -c "$EDGE_COMMAND" & elif [ -x /data/start ]; then /data/start & fi
while :; do sleep 3600; done
INIT
chmod +x root/init
find root -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
(cd root && find . | LC_ALL=C sort | cpio -o -H newc --reproducible --quiet -R 0:0) | gzip -n -9 > edge-vm.initrd

# The web base disk.
mkdir -p web/www
printf 'Hello from an edge VM\n' > web/www/index.html
printf '#!/bin/sh\nexec httpd -f -p 80 -h /data/www\n' > web/start
chmod +x web/start
find web -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
mkfs.ext4 -q -F -U 6f1c7a3e-5b2d-4c8e-9a10-2d3e4f5a6b7c -E hash_seed=0b7e2a1c-3d4e-4f50-8a6b-7c8d9e0f1a2b,root_owner=0:0 \
  -d web web.ext4 16M
# mkfs keeps the files' access times (which reading them changes), stamps change times with the clock and
# draws inode generations at random: pin them all, so the image is the same bit for bit on every build.
for p in / /lost+found $(cd web && find . -mindepth 1 | sed 's|^\.||'); do
  printf 'sif %s generation 0\n' "$p"
  for f in atime ctime mtime crtime; do
    printf 'sif %s %s 20231114221320\nsif %s %s_extra 0\n' "$p" "$f" "$p" "$f"
  done
done | debugfs -w -f - web.ext4 >/dev/null 2>&1
qemu-img convert -O qcow2 web.ext4 edge-web.qcow2

mkdir -p "$OUT"
install -m 0644 "$moddir/../../../boot/vmlinuz-$kver" "$OUT/edge-vm.kernel"
install -m 0644 edge-vm.initrd edge-web.qcow2 "$OUT/"
(cd "$OUT" && sha256sum edge-vm.kernel edge-vm.initrd edge-web.qcow2 > SHA256SUMS)
echo "vm-images.sh: $OUT ($kver)"
cat "$OUT/SHA256SUMS"
