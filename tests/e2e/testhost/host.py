"""TestHost: a local Debian "droplet" (13 by default, or 12) reachable over SSH, for end-to-end tests.

It ties together the rootfs image, the network namespace, the registry proxy, pebble, the
Cloudflare stand-in, the mail relay, the loop-device volume and the nspawn machine, and removes all
of it again.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Self

from . import droplet, guestconfig, hostconfig, limits, machine, network, rootfs, volume
from ._proc import run, wait_until
from .acme import Pebble
from .cloudflare_standin import CloudflareStandin
from .proxy import ForwardProxy
from .smtp import SmtpRelay

HOSTS_DIR = Path("/var/lib/matrix-stack-e2e/hosts")
# Host commands used here besides rootfs.HOST_TOOLS, and the Debian packages that provide them.
HOST_COMMANDS = {"pebble": "pebble", "pebble-challtestsrv": "pebble", "openssl": "openssl",
                 "ssh": "openssh-client", "ssh-keygen": "openssh-client", "losetup": "mount",
                 "ip": "iproute2", "mkfs.xfs": "xfsprogs"}
PROXY_PORT = 3128
# How long the Cloudflare stand-in takes to deploy an origin-pull certificate or association.
ORIGIN_PULLS_DEPLOYMENT_SECONDS = 20.0
CLOUDFLARE_PORT = 8080


class TestHost:
    """A booted guest at 198.18.<index>.2; use as a context manager, or boot() and destroy()."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        index: int,
        authorized_key: str,
        volume_name: str,
        domain: str,
        volume_image: Path | None = None,
        *,
        identity_file: Path | None = None,
        volume_size: int = volume.DEFAULT_SIZE,
        outsider: bool = False,
        boot_timeout: float = 180,
        cpu_quota: float | None = None,
        memory_max: int | None = None,
        user_data: str | None = None,
        volume_filesystem: str | None = "xfs",
        edge_ca: str = "",
        release: str = rootfs.DEFAULT_RELEASE,
        services_of: TestHost | None = None,
    ) -> None:
        self.addr = network.Addresses(index)
        self.index = index
        self.authorized_key = authorized_key
        self.volume_name = volume_name
        self.domain = domain
        self.volume_image = volume_image or volume.VOLUME_DIR / f"{volume_name}.img"
        self.volume_size = volume_size
        self.with_outsider = outsider
        self.boot_timeout = boot_timeout
        self.limits = (limits.Limits(self.addr.netns, cpu_quota, memory_max)
                       if cpu_quota is not None or memory_max is not None else None)
        self.workdir = HOSTS_DIR / str(index)
        self.root = self.workdir / "rootfs"
        self.state = self.workdir / "state"
        self.identity_file = identity_file or self.state / "id_ed25519"
        self._own_identity = identity_file is None
        self.proxy: ForwardProxy | None = None
        self.pebble: Pebble | None = None
        self.cloudflare: CloudflareStandin | None = None
        self.smtp: SmtpRelay | None = None
        self.machine: machine.Machine | None = None
        self.loop_device: str | None = None
        # As a droplet: the user data it was created with, a new instance id, and a volume that
        # DigitalOcean formats (initial_filesystem_type) and auto-mounts when it is new.
        self.user_data = user_data
        self.instance_id = f"e2e-{index}-{uuid.uuid4().hex[:12]}"
        self.volume_filesystem = volume_filesystem
        self.edge_ca = edge_ca  # the edge stand-in's CA, trusted in the guest like Cloudflare's certificates
        self.release = release  # the Debian codename of the droplet's image
        # Another droplet of the same stack (the TURN droplet): it uses that host's ACME server and
        # Cloudflare stand-in (one zone, one ACME account's server) instead of starting its own.
        self.services_of = services_of

    # -- addresses and files --------------------------------------------------------------------
    @property
    def address(self) -> str:
        """The guest's IPv4 address (SSH, HTTP, TURN targets)."""
        return self.addr.guest

    @property
    def host_side_address(self) -> str:
        """The host's end of the veth: proxy, pebble, challtestsrv and the Cloudflare stand-in."""
        return self.addr.host_side

    @property
    def outsider_address(self) -> str:
        return self.addr.outsider

    @property
    def acme_directory(self) -> str:
        return f"https://{self.addr.host_side}:14000/dir"

    @property
    def client_ca_file(self) -> Path:
        """pebble's issuing root: test clients trust this to verify the guest's certificates."""
        if self.services_of is not None:
            return self.services_of.client_ca_file
        return self.state / "pebble-root.pem"

    @property
    def pebble_tls_ca_file(self) -> Path:
        """CA of pebble's own TLS endpoint (ACME directory, management API)."""
        if self.services_of is not None:
            return self.services_of.pebble_tls_ca_file
        return self.state / "tls-ca.pem"

    @property
    def cloudflare_api_url(self) -> str:
        if self.services_of is not None:
            return self.services_of.cloudflare_api_url
        return f"http://{self.addr.host_side}:{CLOUDFLARE_PORT}/client/v4"

    @property
    def mail_relay(self) -> SmtpRelay | None:
        """The mail provider's relay this droplet may send through (its name, login, CA, what arrived)."""
        if self.services_of is not None:
            return self.services_of.mail_relay
        return self.smtp

    @property
    def proxy_url(self) -> str:
        return f"http://{self.addr.host_side}:{PROXY_PORT}"

    @property
    def volume_guest_path(self) -> str:
        return volume.guest_path(self.volume_name)

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> Self:
        self.boot()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.destroy(keep_volume=True)

    def boot(self) -> None:
        """Bring everything up (first call unpacks a fresh rootfs) and wait until SSH answers."""
        try:
            if self.machine is None:
                self._bring_up()
            if not self.machine_running:
                assert self.machine is not None
                self.machine.start()
            self.wait_ready(self.boot_timeout)
        except BaseException:
            self.destroy(keep_volume=True)
            raise

    @property
    def machine_running(self) -> bool:
        return self.machine is not None and self.machine.running

    def _bring_up(self) -> None:
        rootfs.ensure_host_tools(HOST_COMMANDS)
        TestHost.cleanup(self.index)
        self.state.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)
        rootfs.unpack(self.root, self.release)
        if self._own_identity and not self.identity_file.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"e2e-{self.index}",
                 "-f", str(self.identity_file)])
        network.create(self.addr)
        if self.services_of is not None:
            network.share_operator(self.addr, self.services_of.addr)
        if self.with_outsider:
            network.create_outsider(self.addr)
        self.proxy = ForwardProxy(self.addr.host_side, PROXY_PORT, hostconfig.registry_hosts())
        self.proxy.start()
        if self.services_of is None:
            self.pebble = Pebble(self.addr.host_side, self.state)
            self.pebble.start()
            self.cloudflare = CloudflareStandin(self.addr.host_side, CLOUDFLARE_PORT, self.domain,
                                                self.pebble.challtestsrv_url)
            # Origin-pull certificates and associations deploy asynchronously: some seconds here (Cloudflare
            # publishes no figure), so a step that needs them active waits (the first `up`'s nginx).
            self.cloudflare.deployment_seconds = ORIGIN_PULLS_DEPLOYMENT_SECONDS
            self.cloudflare.start()
            # A mail provider's submission relay; its name is public DNS (the stand-in), its CA publicly trusted.
            self.smtp = SmtpRelay(self.addr.host_side, self.state / "smtp")
            self.smtp.start()
            self.pebble.publish_address(self.smtp.name, self.smtp.address)
        relay = self.mail_relay
        keys = [self.authorized_key]
        if self._own_identity:
            keys.append(Path(f"{self.identity_file}.pub").read_text())
        guestconfig.write(self.root, guestconfig.GuestSettings(
            hostname=self.addr.netns, guest_address=self.address,
            host_address=self.host_side_address, proxy_url=self.proxy_url,
            cloudflare_api_url=self.cloudflare_api_url, domain=self.domain,
            authorized_keys=tuple(k for k in keys if k.strip()),
            pebble_tls_ca=self.pebble_tls_ca_file.read_bytes(),
            pebble_root=self.client_ca_file.read_bytes(), edge_ca=self.edge_ca.encode(),
            mail_ca=relay.ca_file.read_bytes() if relay is not None else b"",
            direct=(self.services_of.host_side_address,) if self.services_of is not None else ()))
        created = volume.ensure_image(self.volume_image, self.volume_size, self.volume_filesystem)
        droplet.write(self.root, droplet.DropletModel(
            user_data=self.user_data, instance_id=self.instance_id, hostname=self.addr.netns,
            volume_name=self.volume_name, volume_created_with_droplet=created and self.volume_filesystem is not None))
        (self.state / "volume-image").write_text(str(self.volume_image.resolve()))
        self.loop_device = volume.attach(self.volume_image)
        if self.limits is not None:
            self.limits.create()
        self.machine = machine.Machine(
            self.root, self.addr.netns, self.addr.netns,
            [f"{self.loop_device}:{self.volume_guest_path}"], self.state / "nspawn.log", self.limits)

    def wait_ready(self, timeout: float) -> None:
        """Wait until systemd in the guest reports running or degraded over SSH."""
        deadline = time.monotonic() + timeout

        def ready() -> bool:
            if not self.machine_running:
                raise RuntimeError(f"guest exited during boot; see {self.state / 'nspawn.log'}")
            left = max(5.0, deadline - time.monotonic())
            try:
                out = self.ssh("systemctl is-system-running --wait", timeout=min(left, 60))
            except subprocess.TimeoutExpired:
                return False
            return out.stdout.decode().strip() in ("running", "degraded")

        wait_until(f"guest {self.address} to finish booting", ready, timeout, interval=1)

    def wait_first_boot_apt(self, timeout: int = 300) -> str:
        """Wait until the droplet model's first-boot apt run (it holds apt's locks for a while) is over;
        returns its unit's final state. The unit's state, not its .done marker: under nspawn the unit
        has been seen to end "failed" (systemd: "Failed to spawn 'stop-post' task"), marker unwritten."""
        unit = droplet.FIRST_BOOT_APT_UNIT
        proc = self.ssh(f"for _ in $(seq {timeout}); do s=$(systemctl is-active {unit}); "
                        'case "$s" in active|activating|deactivating|reloading) sleep 1 ;; *) echo "$s"; exit 0 ;; esac; '
                        "done; echo timeout; exit 1", timeout=timeout + 60)
        if proc.returncode != 0:
            status = self.ssh(f"systemctl status --no-pager {unit}; ps axf", timeout=60).stdout.decode()
            raise RuntimeError(f"{self.address}: the first-boot apt run is still going after {timeout} s:\n{status}")
        return proc.stdout.decode().strip()

    def ssh(self, cmd: str, stdin: bytes | None = None, timeout: float = 600,
            check: bool = False) -> subprocess.CompletedProcess[bytes]:
        """Run `cmd` as root in the guest over real SSH (fresh host keys are not pinned)."""
        argv = ["ssh", "-i", str(self.identity_file), "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
                "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR", f"root@{self.address}", cmd]
        return subprocess.run(argv, input=stdin if stdin is not None else b"",
                              capture_output=True, timeout=timeout, check=check)

    def outsider_run(self, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        """Run a host command inside the outsider namespace (source 198.19.<index>.2)."""
        if not self.with_outsider:
            raise RuntimeError("TestHost was created without outsider=True")
        return subprocess.run(["ip", "netns", "exec", self.addr.outsider_netns, *argv],
                              capture_output=True, timeout=timeout, check=False)

    def reboot(self, timeout: float | None = None) -> None:
        """Reboot the guest (nspawn exits 133 and is restarted) and wait until it is back."""
        assert self.machine is not None
        boots = self.machine.boots
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.ssh("systemctl reboot", timeout=30)
        wait_until("guest to restart", lambda: self.machine is not None
                   and self.machine.boots > boots, timeout or self.boot_timeout)
        self.wait_ready(timeout or self.boot_timeout)

    def shutdown(self, timeout: float = 60) -> None:
        """Power the guest off; boot() starts it again on the same rootfs and volume."""
        if self.machine is not None:
            self.machine.stop(timeout)

    def destroy(self, keep_volume: bool = True) -> None:
        """Power off and remove everything; the volume image stays unless keep_volume is False."""
        self.shutdown()
        self.machine = None
        for service in (self.cloudflare, self.smtp, self.pebble, self.proxy):
            if service is not None:
                service.stop()
        self.cloudflare = self.smtp = self.pebble = self.proxy = None
        if self.loop_device is not None:
            volume.detach_device(self.loop_device)  # only this host's device: another may share the image
        self.loop_device = None
        (self.state / "volume-image").unlink(missing_ok=True)
        TestHost.cleanup(self.index)
        if not keep_volume:
            self.volume_image.unlink(missing_ok=True)

    @staticmethod
    def cleanup(index: int | None = None) -> None:
        """Remove leftovers of one index (or of every index), e.g. after a crashed run.

        Kills our nspawn machines, pebble and mail relay processes by exact argv, detaches loop devices of
        our volume images, deletes the namespaces and veths and the rootfs; keeps volume images.
        Proxy and Cloudflare stand-in are threads of the test process and end with it.
        """
        indexes = set(network.leftovers())
        if HOSTS_DIR.is_dir():
            indexes |= {int(p.name) for p in HOSTS_DIR.iterdir() if p.name.isdigit()}
        if index is not None:
            indexes = {index}
        for i in sorted(indexes):
            addr = network.Addresses(i)
            machine.kill_leftovers(addr.netns)
            limits.remove(addr.netns)
            state = HOSTS_DIR / str(i) / "state"
            Pebble.kill_leftovers(state)
            SmtpRelay.kill_leftovers(state / "smtp")
            record = state / "volume-image"
            if record.exists():
                volume.detach(Path(record.read_text().strip()))
            network.destroy(addr)
            _remove_tree(HOSTS_DIR / str(i))
        if index is None and volume.VOLUME_DIR.is_dir():
            for image in volume.VOLUME_DIR.glob("*.img"):
                volume.detach(image)


def _remove_tree(path: Path) -> None:
    """Delete a work dir, first unmounting anything left mounted below it (never expected)."""
    if not path.exists():
        return
    prefix = str(path.resolve()) + "/"
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
        run(["umount", "-l", mount], timeout=30, check=False)
    shutil.rmtree(path, ignore_errors=True)
