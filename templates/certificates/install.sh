# certificates-install: certbot and its Cloudflare DNS-01 plugin (seed: "Setup CertBot").
# Debian's certbot package ships certbot.timer, which `certificates-issue` enables.
if ! ms_apt install --no-install-recommends certbot python3-certbot-dns-cloudflare; then
  ms_log "apt install failed; refreshing the package lists and trying once more"
  ms_apt update
  ms_apt install --no-install-recommends certbot python3-certbot-dns-cloudflare
fi
