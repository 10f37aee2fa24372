# nginx-sites: the three sites of the seed guide (apex well-known, chat. Element, matrix. Synapse) and
# a default server that answers no other name, in sites-available, enabled by symlink; Debian's
# default site removed. `nginx -t` gates every
# reload; nginx reloads only when something changed.
if ! dpkg-query -W -f='${Status}' nginx 2>/dev/null | grep -q "install ok installed"; then
  if ! ms_apt install --no-install-recommends nginx; then
    ms_log "apt install failed; refreshing the package lists and trying once more"
    ms_apt update
    ms_apt install --no-install-recommends nginx
  fi
fi

links_changed=false
if [ -e /etc/nginx/sites-enabled/default ] || [ -L /etc/nginx/sites-enabled/default ]; then
  rm -f /etc/nginx/sites-enabled/default
  links_changed=true
fi
for site in matrix-stack-default matrix-stack-apex matrix-stack-chat matrix-stack-matrix; do
  if [ "$(readlink "/etc/nginx/sites-enabled/$site" 2>/dev/null || true)" != "../sites-available/$site" ]; then
    ln -sfn "../sites-available/$site" "/etc/nginx/sites-enabled/$site"
    links_changed=true
  fi
done

if ! ms_validated nginx -t; then
  ms_log "ERROR: nginx rejects the new configuration (see above); the previous files are back in place, nginx was not reloaded"
  exit 1
fi
ms_enable --now nginx
if ms_changed || [ "$links_changed" = true ]; then
  ms_log "reloading nginx"
  systemctl reload nginx
fi
