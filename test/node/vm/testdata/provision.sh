set -eu
# The package: fetched by your pipeline (or: curl -fsSLo /var/tmp/cri-guard.deb URL).
DEBIAN_FRONTEND=noninteractive dpkg -i /var/tmp/cri-guard.deb
# First nodes: audit (log and count, refuse nothing) and metrics on loopback.
sed -i -e 's|^#mode: reject$|mode: audit|' \
  -e 's|^#metricsListen: 127.0.0.1:9464$|metricsListen: 127.0.0.1:9464|' /etc/cri-guard/config.yaml
cri-guard check-config /etc/cri-guard/config.yaml
systemctl restart cri-guard.service
cri-guard status --config /etc/cri-guard/config.yaml
# Point the kubelet at cri-guard (restarts it if it runs; no pod restarts).
cri-guard kubelet-dropin install
