#!/bin/bash
# Installs what the test suite needs on a fresh Debian 12 machine (CI runs this first).
# - the Python packages of requirements-dev.txt into .venv
# - Debian's nginx, coturn, shellcheck, PostgreSQL 15, systemd-analyze, gpg: the real validators of rendered configs
#   (gpg also signs the stand-in Element releases)
# - matrix-synapse (the pinned version) in its own venv, for `python -m synapse.config`
# Services are never started by the package installs (policy-rc.d), the tests run them.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt

# shellcheck source=tests/tools/apt-ensure.sh
. tests/tools/apt-ensure.sh
apt_ensure nginx coturn shellcheck postgresql-15 systemd gpg gpg-agent xfsprogs redis-server

synapse_version=$(.venv/bin/python -c 'from components.settings import DEFAULTS; print(DEFAULTS["synapseVersion"])')
# The lock for this machine's Python (the host's Debian is one of the supported images), in the
# variant with Synapse's redis extra (synapseWorkers) and the S3 storage provider (mediaStorage:
# spaces), so Synapse can load those configs too.
lock=$("$PYTHON" -c 'import sys; print("templates/synapse/locks/'"$synapse_version"'/python%d.%d-redis-s3.txt" % sys.version_info[:2])')
venv=build/synapse-venv
if ! "$venv/bin/python" -c "import bs4, s3_storage_provider, txredisapi, synapse, sys; sys.exit(synapse.__version__ != '$synapse_version')" 2>/dev/null; then
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv"
  # Exactly what the server installs: the version's lock, hashes checked, wheels only.
  "$venv/bin/pip" install -q --disable-pip-version-check --require-hashes --only-binary :all: --no-deps \
    -r "$lock"
fi
