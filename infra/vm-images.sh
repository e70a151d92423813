#!/usr/bin/env bash
# Builds the project's VM images from Debian packages (reproducibly: fixed times, sorted archives, fixed
# filesystem ids) into DIR (default /opt/edge-platform/images), with their SHA-256 in DIR/SHA256SUMS:
#   edge-vm.kernel   Debian's cloud kernel (linux-image-cloud-amd64)
#   edge-vm.initrd   busybox + the kernel's virtio, fw_cfg, ACPI button and evdev modules + /init (see below)
#   edge-web.qcow2   an ext4 disk whose /start serves /www with busybox httpd on port 80
#   edge-docker.qcow2  the node disk of VM-based docker clusters: Debian's Docker Engine, /start runs dockerd
#                      with TLS (certificates from the user data)
# A VM of the `vm` platform boots the kernel and initrd with its own qcow2 overlay of an App's image as
# /dev/vda. /init loads the drivers, brings up eth0 on qemu's user network, mounts /dev/vda on /data, reads
# the user data qemu passes through fw_cfg (opt/edge/user-data: the App's command and env, kept out of the
# command line) and runs that command, or /data/start when there is none. The ACPI power button powers the
# guest off (busybox acpid).
set -euo pipefail
OUT=${1:-/opt/edge-platform/images}
export SOURCE_DATE_EPOCH=1700000000 E2FSPROGS_FAKE_TIME=1700000000
for b in apt-get dpkg-deb depmod cpio gzip mkfs.ext4 debugfs qemu-img busybox sha256sum ldd; do
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

# ext4 disks: disk NAME SIZE UUID HASH_SEED builds NAME.qcow2 from the directory NAME/. mkfs keeps the files'
# access times (which reading them changes), stamps change times with the clock and draws inode generations
# at random: all are pinned, so an image is the same bit for bit on every build.
disk() {
  local name=$1 size=$2 uuid=$3 seed=$4 p f
  find "$name" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  mkfs.ext4 -q -F -U "$uuid" -E "hash_seed=$seed,root_owner=0:0" -d "$name" "$name.ext4" "$size"
  for p in / /lost+found $(cd "$name" && find . -mindepth 1 | LC_ALL=C sort | sed 's|^\.||'); do
    printf 'sif %s generation 0\n' "$p"
    for f in atime ctime mtime crtime; do
      printf 'sif %s %s 20231114221320\nsif %s %s_extra 0\n' "$p" "$f" "$p" "$f"
    done
  done | debugfs -w -f - "$name.ext4" >/dev/null 2>&1
  qemu-img convert -O qcow2 "$name.ext4" "$name.qcow2"
}

# The web base disk.
mkdir -p edge-web/www
printf 'Hello from an edge VM\n' > edge-web/www/index.html
printf '#!/bin/sh\nexec httpd -f -p 80 -h /data/www\n' > edge-web/start
chmod +x edge-web/start
disk edge-web 16M 6f1c7a3e-5b2d-4c8e-9a10-2d3e4f5a6b7c 0b7e2a1c-3d4e-4f50-8a6b-7c8d9e0f1a2b

# The docker node disk of VM-based docker clusters: Debian's Docker Engine (dockerd, containerd, runc and
# the libraries they link) and a /start that runs dockerd on port 2376 of the guest, which qemu forwards
# to a loopback port of the host. The engine speaks TLS only and takes only clients with a certificate of
# the node's own CA: the CRM made that CA for this node and passes the CA, the engine's certificate and
# its key in the user data (EDGE_ENGINE_CA, EDGE_ENGINE_CERT, EDGE_ENGINE_KEY); without them the engine
# does not start. The guest's root is the initramfs, so runc must not
# pivot_root (DOCKER_RAMDISK); containers share the guest's network (no bridge, no iptables in the guest)
# and the vfs storage driver keeps the kernel's overlay module out of the initramfs.
mkdir -p edge-docker/bin edge-docker/lib edge-docker/lib64
for b in dockerd containerd containerd-shim-runc-v2 runc docker-init docker-proxy; do
  p=$(command -v "$b") || { echo "vm-images.sh: $b missing (Debian docker.io, infra/install.sh)" >&2; exit 1; }
  cp -L "$p" edge-docker/bin/
  { ldd "$p" 2>/dev/null || true; } | awk '/=>/ {print $3}' | while read -r l; do cp -L "$l" edge-docker/lib/; done
done
cp -L /lib64/ld-linux-x86-64.so.2 edge-docker/lib64/
cat > edge-docker/start <<'START'
#!/bin/sh
mkdir -p /lib64 /lib /run /sys/fs/cgroup
ln -sf /data/lib64/ld-linux-x86-64.so.2 /lib64/ld-linux-x86-64.so.2
ln -sfn /data/lib /lib/x86_64-linux-gnu
mount -t cgroup2 none /sys/fs/cgroup
mount -t tmpfs tmpfs /run
# Write data back within a second (not 30 s): a node that loses power keeps the images it was given.
echo 100 > /proc/sys/vm/dirty_expire_centisecs
echo 100 > /proc/sys/vm/dirty_writeback_centisecs
export PATH=/data/bin:$PATH DOCKER_RAMDISK=true
if [ -z "$EDGE_ENGINE_KEY" ]; then
  echo "edge-vm: no engine certificate in the user data: not starting the container engine"
  exit 1
fi
mkdir -p /run/engine
(umask 077
 printf '%s\n' "$EDGE_ENGINE_CA" > /run/engine/ca.pem
 printf '%s\n' "$EDGE_ENGINE_CERT" > /run/engine/cert.pem
 printf '%s\n' "$EDGE_ENGINE_KEY" > /run/engine/key.pem)
unset EDGE_ENGINE_CA EDGE_ENGINE_CERT EDGE_ENGINE_KEY
echo "edge-vm: starting the container engine"
exec dockerd -H tcp://0.0.0.0:2376 --tlsverify --tlscacert /run/engine/ca.pem --tlscert /run/engine/cert.pem \
  --tlskey /run/engine/key.pem --iptables=false --ip6tables=false --bridge=none --storage-driver=vfs \
  --data-root /data/docker --exec-root /run/docker --pidfile /run/docker.pid --log-level warn
START
chmod +x edge-docker/start
disk edge-docker 1G 2d6e9b1f-7c3a-4e5d-8f20-3a4b5c6d7e8f 5a1b2c3d-4e5f-4a6b-9c7d-8e9f0a1b2c3d

mkdir -p "$OUT"
install -m 0644 "$moddir/../../../boot/vmlinuz-$kver" "$OUT/edge-vm.kernel"
install -m 0644 edge-vm.initrd edge-web.qcow2 edge-docker.qcow2 "$OUT/"
(cd "$OUT" && sha256sum edge-vm.kernel edge-vm.initrd edge-web.qcow2 edge-docker.qcow2 > SHA256SUMS)
echo "vm-images.sh: $OUT ($kver)"
cat "$OUT/SHA256SUMS"
