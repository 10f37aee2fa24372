# First boot: let cloud-init finish (it runs apt and writes root's keys) before touching apt.
if command -v cloud-init >/dev/null 2>&1 && [ ! -e /var/lib/cloud/instance/boot-finished ]; then
  timeout 900 cloud-init status --wait >/dev/null 2>&1 || ms_log "cloud-init did not report done; continuing"
fi

packages=(ufw nftables curl ca-certificates jq openssl xfsprogs unattended-upgrades)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ms_changed || [ ${#missing[@]} -gt 0 ]; then
  ms_apt update
fi
if [ ${#missing[@]} -gt 0 ]; then
  ms_apt install --no-install-recommends "${missing[@]}"
fi
# Security updates install themselves (Debian's unattended-upgrades defaults: security only): its daily
# run and the reboot setting (automaticRebootTime) are this step's files.
