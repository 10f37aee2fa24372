"""A local Debian 12 "droplet" for end-to-end tests: systemd-nspawn in its own network namespace.

See `host.TestHost`; the other modules each do one part (rootfs, network, proxy, ACME, Cloudflare).
"""

from .host import TestHost

__all__ = ["TestHost"]
