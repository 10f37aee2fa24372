#!/bin/bash
# Host tools for the end-to-end suite on a fresh Debian 12 machine: systemd-nspawn and debootstrap
# for the local "droplet", pebble (ACME test server), ssh client, coturn's turnutils_uclient.
# --no-install-recommends matters: recommends would add libnss-mymachines to the host's nsswitch.
set -euo pipefail
need=()
for pkg in debootstrap systemd-container zstd pebble openssh-client coturn iproute2 openssl; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod 0755 /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi
