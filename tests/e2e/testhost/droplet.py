"""What a DigitalOcean droplet does that a plain Debian guest does not, modelled in the test host.

Each piece says where the behaviour is stated (DigitalOcean's documentation) and how it is modelled:

1. User data and cloud-init. A droplet runs cloud-init at first boot with the user data given at
   creation ("How to Provide User Data", docs.digitalocean.com/products/droplets/how-to/provide-user-data).
   Here: Debian's own cloud-init package in the image, fed through its NoCloud seed directory with the
   `user_data` the program declared on the Droplet resource, byte for byte as recorded. As on a droplet,
   root logins stay allowed (DigitalOcean's images log in as root: disable_root false) and the network
   is configured by the platform, not by cloud-init.
2. Volume auto-mount. A volume created with a filesystem is formatted and mounted automatically when it
   is first attached, at /mnt/<name> with dashes turned into underscores, with the options
   defaults,nofail,discard,noatime, and set up to mount again at every boot ("How to Mount Volumes" and
   "Volume naming conventions", docs.digitalocean.com/products/volumes/). Only at the volume's creation:
   a volume attached later (a replaced droplet) is not mounted automatically. Here: when the volume image
   is new, it is formatted as XFS (the program's initial_filesystem_type) and the droplet gets the fstab
   line; a boot-time unit mounts every DigitalOcean volume line of fstab (systemd's fstab generator,
   which does this on a droplet, ignores /dev/disk/by-id devices inside a container).
3. First-boot package activity. Debian's unattended-upgrades (installed and enabled on DigitalOcean's
   Debian images) and cloud-init run apt right after the first boot, while our first steps arrive.
   Here: a first-boot unit runs a real `apt-get update` at boot; then, once cloud-init is done (as
   apt-daily's run follows it, and as the program's first apt step waits for cloud-init), it holds the
   locks apt and dpkg take (the same fcntl locks) for a while: the package lists' lock first, as a slow
   `apt-get update` does (apt fails at once on it, whatever DPkg::Lock::Timeout says), then dpkg's, as
   an install does. The program's first apt calls must wait for whichever they meet (in this container
   the first apt step has so far met only dpkg's: see test_deployment.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .guestconfig import write_file

FIRST_BOOT_CLOUD_INIT_MAX_SECONDS = 180  # the locks are taken once cloud-init is done, or after this
FIRST_BOOT_LISTS_SECONDS = 10  # the package lists' lock held this long (dpkg's locks with it)
FIRST_BOOT_DPKG_SECONDS = 15  # dpkg's locks alone, after the lists' lock is released
FSTAB_MOUNT_UNIT = "e2e-droplet-fstab-volumes.service"
FIRST_BOOT_APT_UNIT = "e2e-droplet-first-boot-apt.service"


def auto_mount_point(volume_name: str) -> str:
    """DigitalOcean's automatic mount point: /mnt/<name>, dashes replaced by underscores."""
    return "/mnt/" + volume_name.replace("-", "_")


def fstab_line(volume_name: str) -> str:
    return (f"/dev/disk/by-id/scsi-0DO_Volume_{volume_name} {auto_mount_point(volume_name)} xfs "
            "defaults,nofail,discard,noatime 0 2\n")


@dataclass(frozen=True)
class DropletModel:
    """One droplet's platform behaviour: its user data, its identity and its volume's history."""

    user_data: str | None  # None: the droplet was created without user data (cloud-init still runs)
    instance_id: str
    hostname: str
    volume_name: str
    volume_created_with_droplet: bool  # a new volume: DigitalOcean formats and mounts it


def _enable(root: Path, unit: str, target: str) -> None:
    wants = root / "etc/systemd/system" / f"{target}.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / unit
    if not link.is_symlink():
        link.symlink_to(f"/etc/systemd/system/{unit}")


def write(root: Path, model: DropletModel) -> None:
    """Write the droplet's platform pieces into an unpacked root filesystem, before its first boot."""
    seed = "/var/lib/cloud/seed/nocloud"
    write_file(root, f"{seed}/meta-data", f"instance-id: {model.instance_id}\nlocal-hostname: {model.hostname}\n")
    write_file(root, f"{seed}/user-data", model.user_data or "", 0o600)
    write_file(root, "/etc/cloud/cloud.cfg.d/90-e2e-droplet.cfg",
           "# The e2e test host as a DigitalOcean droplet: user data from the NoCloud seed, root logins\n"
           "# as on DigitalOcean's images, network and apt sources left to the platform.\n"
           "datasource_list: [NoCloud]\n"
           "disable_root: false\n"
           "network: {config: disabled}\n"
           "apt: {preserve_sources_list: true}\n"
           "manage_etc_hosts: false\n")

    if model.volume_created_with_droplet:
        fstab = root / "etc/fstab"
        existing = fstab.read_text() if fstab.exists() else ""
        write_file(root, "/etc/fstab", existing + fstab_line(model.volume_name))
    write_file(root, f"/etc/systemd/system/{FSTAB_MOUNT_UNIT}",
           "[Unit]\n"
           "Description=e2e: mount the DigitalOcean volume lines of /etc/fstab (as on a droplet)\n"
           "DefaultDependencies=no\n"
           "Before=local-fs.target\n"
           "[Service]\n"
           "Type=oneshot\n"
           "RemainAfterExit=yes\n"
           "ExecStart=/bin/sh -c 'grep -E \"^/dev/disk/by-id/scsi-0DO_Volume_\" /etc/fstab | "
           "while read -r dev target type opts _; do [ -b \"$dev\" ] || continue; mkdir -p \"$target\"; "
           "mountpoint -q \"$target\" || mount -t \"$type\" -o \"$opts\" \"$dev\" \"$target\"; done'\n"
           "[Install]\n"
           "WantedBy=local-fs.target\n")
    _enable(root, FSTAB_MOUNT_UNIT, "local-fs.target")

    write_file(root, "/usr/local/sbin/e2e-first-boot-apt",
           "#!/usr/bin/python3\n"
           "# e2e: first-boot package activity on a fresh droplet: a real `apt-get update` at boot, then, once\n"
           "# cloud-init is done (as apt-daily's run follows it), the package lists' lock as a slow update\n"
           "# holds it, then dpkg's as an install does.\n"
           "import fcntl, os, subprocess, time\n"
           "subprocess.run(['apt-get', '-q', 'update'], check=False)\n"
           f"deadline = time.monotonic() + {FIRST_BOOT_CLOUD_INIT_MAX_SECONDS}\n"
           "while time.monotonic() < deadline and not os.path.exists('/var/lib/cloud/instance/boot-finished'):\n"
           "    time.sleep(0.2)\n"
           "with open('/var/lib/dpkg/lock-frontend', 'w') as frontend, open('/var/lib/dpkg/lock', 'w') as lock:\n"
           "    fcntl.lockf(frontend, fcntl.LOCK_EX)\n"
           "    fcntl.lockf(lock, fcntl.LOCK_EX)\n"
           "    with open('/var/lib/apt/lists/lock', 'w') as lists:\n"
           "        fcntl.lockf(lists, fcntl.LOCK_EX)\n"
           f"        time.sleep({FIRST_BOOT_LISTS_SECONDS})\n"
           f"    time.sleep({FIRST_BOOT_DPKG_SECONDS})\n", 0o755)
    write_file(root, f"/etc/systemd/system/{FIRST_BOOT_APT_UNIT}",
           "[Unit]\n"
           "Description=e2e: apt activity right after a droplet's first boot\n"
           "After=network-online.target\n"
           "ConditionPathExists=!/var/lib/e2e-first-boot-apt.done\n"
           "[Service]\n"
           "Type=simple\n"
           "ExecStart=/usr/local/sbin/e2e-first-boot-apt\n"
           "ExecStopPost=/usr/bin/touch /var/lib/e2e-first-boot-apt.done\n"
           "[Install]\n"
           "WantedBy=multi-user.target\n")
    _enable(root, FIRST_BOOT_APT_UNIT, "multi-user.target")
