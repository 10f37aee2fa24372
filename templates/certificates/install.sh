# certificates-install: certbot and its Cloudflare DNS-01 plugin (seed: "Setup CertBot").
# Debian's certbot package ships certbot.timer, which `certificates-issue` enables. apt runs only for
# what is missing (an apt-get that finds nothing to do still costs about a second on one CPU).
packages=(certbot python3-certbot-dns-cloudflare)
missing=()
for pkg in "${packages[@]}"; do
  [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" = "install ok installed" ] || missing+=("$pkg")
done
if [ -n "${missing[*]:-}" ] && ! ms_apt install --no-install-recommends "${missing[@]}"; then
  ms_log "apt install failed; refreshing the package lists and trying once more"
  ms_apt update
  ms_apt install --no-install-recommends "${missing[@]}"
fi
