# shellcheck shell=bash
# Sourced by the install scripts: apt_ensure PKG... installs the Debian packages not yet installed,
# without recommends and without starting their services (the tests start what they need).
apt_ensure() {
  local need=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
  done
  [ ${#need[@]} -gt 0 ] || return 0
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod 0755 /usr/sbin/policy-rc.d
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" || {
    rm -f /usr/sbin/policy-rc.d
    return 1
  }
  rm -f /usr/sbin/policy-rc.d
}
