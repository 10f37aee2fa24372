"""Cloud-side components: droplet and volume, Cloudflare edge, firewall, generated secrets."""
