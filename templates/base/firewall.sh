# The host firewall mirrors the DigitalOcean firewall (defence in depth: a mistake in one is
# still covered by the other). Rebuilt only when the rule list changed or ufw is not active.
rules=/etc/matrix-stack/ufw.rules
if ms_changed || ! ufw status | grep -q '^Status: active'; then
  ufw --force reset >/dev/null
  ufw default deny incoming >/dev/null
  ufw default allow outgoing >/dev/null
  grep -v '^#' "$rules" | while read -r proto port source; do
    ufw allow proto "$proto" from "$source" to any port "$port" >/dev/null
  done
  ufw --force enable >/dev/null
  ms_log "ufw rules applied ($(grep -vc '^#' "$rules") rules)"
fi
