# coturn from Debian. On first install the unit is masked for this boot only, so the package's
# postinst cannot start coturn with its default (unauthenticated) config; coturn-config unmasks
# and starts it once the hardened config and the certificate copy are in place.
if ! dpkg-query -W -f='${Status}' coturn 2>/dev/null | grep -q 'install ok installed'; then
  systemctl mask --runtime coturn.service >/dev/null 2>&1 || true
  # base-packages refreshed the package lists; refresh again only if they turn out stale.
  if ! ms_apt install --no-install-recommends coturn; then
    ms_log "apt install failed; refreshing the package lists and trying once more"
    ms_apt update
    ms_apt install --no-install-recommends coturn
  fi
fi

# Seed guide: enable the daemon in /etc/default/coturn (read by the SysV script).
if ! grep -qx 'TURNSERVER_ENABLED=1' /etc/default/coturn 2>/dev/null; then
  if grep -q '^#*[[:space:]]*TURNSERVER_ENABLED=' /etc/default/coturn 2>/dev/null; then
    sed -i 's/^#*[[:space:]]*TURNSERVER_ENABLED=.*/TURNSERVER_ENABLED=1/' /etc/default/coturn
  else
    echo 'TURNSERVER_ENABLED=1' >> /etc/default/coturn
  fi
  ms_log "TURNSERVER_ENABLED=1 in /etc/default/coturn"
fi

# Seed guide: service names for the TURN ports in /etc/services (no turnserver-cli: no-cli is set).
while IFS= read -r line; do
  if ! grep -qxF "$line" /etc/services; then
    printf '%s\n' "$line" >> /etc/services
    ms_log "added to /etc/services: $line"
  fi
done <<'SERVICES'
stun-turn       3478/tcp                        # Coturn
stun-turn       3478/udp                        # Coturn
stun-turn-tls   5349/tcp                        # Coturn
stun-turn-tls   5349/udp                        # Coturn
SERVICES
