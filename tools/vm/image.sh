#!/usr/bin/env bash
# Builds (or reuses) the Debian trixie node image that `make test-node` boots:
# an ext4 root file system made by mmdebstrap, with the image's own kernel and
# initrd beside it. Prints progress on stderr and the image directory on
# stdout:
#   $CACHE/vm/trixie-<hash>/{rootfs.ext4,vmlinuz,initrd.img,packages.txt}
# <hash> covers this script (package list and customisation), so changing
# either builds a new image; the newest 3 are kept. Downloaded .debs are kept
# in $CACHE/vm/debs so a rebuild fetches nothing it already has.
# Needs root, mmdebstrap and e2fsprogs (make deps installs them).
set -euo pipefail
cache="${CRI_GUARD_CACHE:-/var/cache/cri-guard}/vm"
suite=trixie
# What a kubeadm-style containerd node has, and what the scenarios use.
packages=(
	systemd systemd-sysv udev dbus kmod procps util-linux
	linux-image-amd64 initramfs-tools
	containerd runc containernetworking-plugins
	busybox-static iproute2 iptables conntrack ca-certificates
)
# The apt mirror of this machine (the same one apt-get uses here).
mirror="${CRI_GUARD_DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
	mirror=$(grep -rhoE '^(URIs:|deb)[[:space:]]+https?://[^[:space:]]+/debian/?' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null |
		awk '{print $2}' | head -n1 || true)
	mirror="${mirror:-http://deb.debian.org/debian}"
fi
hash=$(cat "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)
out="$cache/$suite-$hash"
if [ -f "$out/rootfs.ext4" ] && [ -f "$out/vmlinuz" ] && [ -f "$out/initrd.img" ]; then
	echo "node image: reusing $out" >&2
	echo "$out"
	exit 0
fi
for tool in mmdebstrap mkfs.ext4; do
	command -v "$tool" >/dev/null || { echo "node image: $tool is missing (make deps installs it)" >&2; exit 1; }
done
start=$(date +%s)
mkdir -p "$cache/debs"
work=$(mktemp -d "$cache/.build-XXXXXX")
# --one-file-system: never follow a mount mmdebstrap may have left behind.
trap 'rm -rf --one-file-system "$work"' EXIT
root="$work/root"
echo "node image: building $suite from $mirror into $out" >&2
# The customize hooks run on the host with the chroot as "$1".
mmdebstrap --quiet --mode=root --variant=minbase --format=directory \
	--include="$(IFS=,; echo "${packages[*]}")" \
	--skip=download/empty --skip=essential/unlink \
	--setup-hook='mkdir -p "$1"/var/cache/apt/archives' \
	--setup-hook="sync-in $cache/debs /var/cache/apt/archives" \
	--customize-hook="sync-out /var/cache/apt/archives $cache/debs" \
	--customize-hook='rm -f "$1"/var/cache/apt/archives/*.deb' \
	--customize-hook='echo node > "$1"/etc/hostname' \
	--customize-hook='printf "127.0.0.1 localhost node\n::1 localhost\n" > "$1"/etc/hosts' \
	--customize-hook=': > "$1"/etc/resolv.conf' \
	--customize-hook='printf "/dev/vda / ext4 rw,errors=remount-ro 0 1\nshare /share 9p trans=virtio,version=9p2000.L,msize=1048576,cache=none,nofail 0 0\n" > "$1"/etc/fstab' \
	--customize-hook='mkdir -p "$1"/share' \
	--customize-hook='passwd --root "$1" -d root' \
	--customize-hook='cat > "$1"/etc/systemd/system/cg-node.service <<UNIT
[Unit]
Description=cri-guard node test: runs /share/run.sh, then powers off
After=multi-user.target
RequiresMountsFor=/share
[Service]
Type=oneshot
StandardOutput=journal+console
StandardError=journal+console
ExecStart=/bin/sh /share/run.sh
ExecStopPost=/bin/systemctl poweroff --no-block
[Install]
WantedBy=multi-user.target
UNIT' \
	--customize-hook='chroot "$1" systemctl enable cg-node.service' \
	--customize-hook='chroot "$1" systemctl disable containerd.service' \
	--customize-hook='chroot "$1" systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer man-db.timer dpkg-db-backup.timer systemd-tmpfiles-clean.timer 2>/dev/null || true' \
	--customize-hook='chroot "$1" dpkg-query -W -f "\${Package} \${Version}\n" > "$1"/root/packages.txt' \
	"$suite" "$root" "$mirror"
mkdir -p "$work/out"
cp "$root"/boot/vmlinuz-* "$work/out/vmlinuz"
cp "$root"/boot/initrd.img-* "$work/out/initrd.img"
cp "$root/root/packages.txt" "$work/out/packages.txt"
# The root file system with 2 GiB free for images and containers.
used=$(du -sm "$root" | cut -f1)
mkfs.ext4 -q -F -L node -d "$root" "$work/out/rootfs.ext4" "$((used + 2048))M"
rm -rf "$root"
rm -rf "$out"
mv "$work/out" "$out"
# Keep the newest 3 images.
ls -1dt "$cache/$suite"-*/ 2>/dev/null | tail -n +4 | xargs -r rm -rf
echo "node image: built $out in $(( $(date +%s) - start ))s ($(grep -E '^(containerd|runc|systemd|linux-image-[0-9][^ ]*) ' "$out/packages.txt" | tr '\n' ' '))" >&2
echo "$out"
