#!/bin/bash
# Host tools for the end-to-end suite on a fresh Debian 12 machine: systemd-nspawn and debootstrap
# for the local "droplet", pebble (ACME test server), ssh client, coturn's turnutils_uclient.
# Chromium opens the local server's Element as `make local-server` prints it (tests/e2e/test_local_server.py).
# --no-install-recommends matters: recommends would add libnss-mymachines to the host's nsswitch.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=tests/tools/apt-ensure.sh
. tests/tools/apt-ensure.sh
apt_ensure debootstrap systemd-container zstd pebble openssh-client coturn iproute2 openssl chromium
