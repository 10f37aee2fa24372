# The TURN droplet runs coturn (turnDroplet): this droplet stops and disables its own, if it has one.
# The package and /etc/turnserver.conf stay, so switching turnDroplet off again only re-enables it.
if systemctl cat coturn.service >/dev/null 2>&1; then
  if systemctl is-enabled --quiet coturn.service 2>/dev/null || systemctl is-active --quiet coturn.service; then
    systemctl disable --now --quiet coturn.service
    ms_log "coturn stopped and disabled: the TURN droplet serves TURN"
  fi
fi
