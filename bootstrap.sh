#!/bin/sh
# Installs everything vrpipe needs on a fresh Debian 12 machine (as root): the Debian packages the
# build, the router engine and the tests use, and the Python packages in .venv. Safe to run again.
set -eu
cd "$(dirname "$0")"

DEBIAN_PACKAGES="
  python3 python3-venv python3-jinja2 python3-prometheus-client
  nftables dnsmasq-base haproxy iproute2 conntrack isc-dhcp-client iputils-ping curl socat
  gpg gpgv dpkg-dev lintian reprepro mmdebstrap arch-test debian-archive-keyring
  qemu-system-x86 qemu-utils ovmf fdisk e2fsprogs dosfstools mtools syslinux syslinux-common extlinux
  grub-efi-amd64-bin
  openssh-server openssh-client postgresql
  libvirt-daemon-system libvirt-clients libvirt-dev pkg-config gcc python3-dev
"
missing=""
for p in $DEBIAN_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "bootstrap: installing Debian packages:$missing"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
fi

# libvirt here runs its guests as root: without this it re-probes qemu on every start (about 55 s a domain),
# since /dev/kvm belongs to a group its own user is not in.
QEMU_CONF=/etc/libvirt/qemu.conf
if ! grep -q '^user = "root"' "$QEMU_CONF"; then
  printf '\n# vrpipe (bootstrap.sh): guests run as root\nuser = "root"\ngroup = "root"\n' >> "$QEMU_CONF"
fi

if [ ! -x .venv/bin/python ]; then
  /usr/bin/python3 -m venv .venv
fi
.venv/bin/pip install -q -e '.[dev]'
echo "bootstrap: ready (.venv/bin/invoke --list shows the tasks)"
