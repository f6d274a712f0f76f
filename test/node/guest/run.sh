#!/bin/sh
# Runs inside the node VM as cg-node.service (see tools/vm/image.sh): sets
# the node up the way an operator would (containerd with the systemd cgroup
# driver, a standalone kubelet, cri-guard from `make install` or its .deb,
# enabled by its units), runs the scenario binary /inputs/vm.test with the
# arguments in /share/args, and writes its exit code to /share/out/rc. The
# unit powers the VM off afterwards. Everything goes to /share/out/vm.log,
# which the host streams.
set -u
out=/share/out
mkdir -p $out
exec >>$out/vm.log 2>&1
up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "node: [$(up)s] $*"; }
fail() { say "SETUP FAILED: $*"; journalctl -b --no-pager >$out/journal.txt 2>&1; echo 90 >$out/rc; exit 1; }
say "booted: $(uname -r), systemd $(systemctl --version | head -n1 | cut -d' ' -f2), $(stat -fc %T /sys/fs/cgroup) on /sys/fs/cgroup"
# The inputs come on a read-only virtio disk (much faster than 9p under
# TCG); /share (9p) carries this script, the arguments and the results.
mkdir -p /inputs
mount -o ro /dev/vdb /inputs || fail "mount the inputs disk"
g=/inputs/guest

# containerd 1.7 with SystemdCgroup = true, and a bridge CNI network.
install -D -m 0644 $g/containerd.toml /etc/containerd/config.toml
install -D -m 0644 $g/10-bridge.conflist /etc/cni/net.d/10-bridge.conflist
# (Started, not enabled: every systemd reload costs 10-20 s under TCG.)
systemctl start containerd.service || fail "containerd"
say "containerd started"
ctr -n k8s.io images import /inputs/images.tar >/dev/null || fail "image import"
say "containerd $(containerd --version | cut -d' ' -f3) running, images imported"

# Tools the scenarios use.
install -m 0755 /inputs/bin/crictl /usr/local/bin/crictl
printf 'runtime-endpoint: unix:///run/cri-guard/cri-guard.sock\nimage-endpoint: unix:///run/cri-guard/cri-guard.sock\ntimeout: 60\n' >/etc/crictl.yaml

# The kubelet, standalone.
install -m 0755 /inputs/bin/kubelet /usr/local/bin/kubelet
install -D -m 0644 $g/kubelet.service /etc/systemd/system/kubelet.service
install -D -m 0644 $g/kubelet-config.yaml /var/lib/kubelet/config.yaml
mkdir -p /etc/kubernetes/manifests

# cri-guard, the operator's way: its package if the host staged one (the
# postinst enables and starts the units; `cri-guard kubelet-dropin install`
# activates the kubelet drop-in), else the files of `make install` and the
# README's steps. Then the node's config: metrics on loopback (README, Node
# rollout step 1).
if ls /inputs/pkg/cri-guard_*.deb >/dev/null 2>&1; then
	echo package >/run/cri-guard-installed-by
	dpkg -i --force-confold /inputs/pkg/cri-guard_*.deb || fail "dpkg -i"
	say "installed $(ls /inputs/pkg/cri-guard_*.deb | xargs -n1 basename)"
	printf '\n# node test\nmetricsListen: 127.0.0.1:9464\n' >>/etc/cri-guard/config.yaml
	cri-guard check-config /etc/cri-guard/config.yaml || fail "check-config"
	systemctl restart cri-guard.service || fail "cri-guard restart with the node's config"
	cri-guard kubelet-dropin install --no-restart || fail "kubelet-dropin install"
else
	echo make-install >/run/cri-guard-installed-by
	cp -a /inputs/install/. / || fail "make install files"
	say "installed the files of make install"
	printf '\n# node test\nmetricsListen: 127.0.0.1:9464\n' >>/etc/cri-guard/config.yaml
	cri-guard check-config /etc/cri-guard/config.yaml || fail "check-config"
	systemctl daemon-reload
	systemctl enable -q --now cri-guard.socket cri-guard.service || fail "cri-guard units"
fi
# CRI_GUARD_NODE_GUARD_BIN (host): another cri-guard build in place of the
# installed binary, e.g. an old one to show that a scenario fails without
# its fix. The config stays; a build from before `cri-guard reload` gets the
# ExecReload its units had (SIGHUP).
if [ -e /inputs/bin/cri-guard-replace ]; then
	exe=$(command -v cri-guard)
	install -m 0755 /inputs/bin/cri-guard-replace "$exe" || fail "replace $exe"
	if ! cri-guard help 2>/dev/null | grep -q '^  reload '; then
		mkdir -p /etc/systemd/system/cri-guard.service.d
		printf '[Service]\nExecReload=\nExecReload=/bin/kill -HUP $MAINPID\n' >/etc/systemd/system/cri-guard.service.d/50-replaced-binary.conf
		systemctl daemon-reload
		say "replaced binary has no reload command: ExecReload=/bin/kill -HUP \$MAINPID"
	fi
	cri-guard check-config /etc/cri-guard/config.yaml || fail "check-config with the replaced binary"
	systemctl restart cri-guard.service || fail "cri-guard restart with the replaced binary"
	say "replaced $exe by $(cri-guard version 2>/dev/null | head -n1) (CRI_GUARD_NODE_GUARD_BIN)"
fi
# kubelet.service was in place before the last reload (the postinst's, or
# the one above); started, not enabled, to spare a reload.
systemctl start kubelet.service || fail "kubelet"
say "cri-guard $(cri-guard version 2>/dev/null | head -n1) and kubelet $(kubelet --version | cut -d' ' -f2) started"

args=$(cat /share/args 2>/dev/null || true)
say "scenarios: vm.test -test.v $args"
cp /inputs/vm.test /usr/local/bin/vm.test
# shellcheck disable=SC2086
(cd /share/out && CRI_GUARD_IN_VM=1 /usr/local/bin/vm.test -test.v -test.timeout 60m $args)
rc=$?
say "scenarios done: exit $rc"
journalctl -b --no-pager >$out/journal.txt 2>&1
echo $rc >$out/rc
