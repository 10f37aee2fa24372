"""Deploy the program onto a local Debian test host: the program's own steps, run for real.

The program runs under mocks with the test host standing in for the droplet (its address is the
droplet's IPv4) and the host side of the test network standing in for Cloudflare (the only
source allowed on 80/443, and the ACME DNS API via the stand-in). Then every recorded remote
command is executed over SSH, with the cloud resources, in the engine's order and parallelism
(tests/e2e/engine.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.cloud.adoption import volume_description
from components.settings import DEFAULTS, Settings, load
from tests.e2e.edge import Edge, shared_edge
from tests.e2e.engine import Engine, recorded_credentials
from tests.e2e.runner import StepResult
from tests.e2e.standins import ElementRelease, build_releases, release_server
from tests.e2e.testhost import TestHost, rootfs
from tests.e2e.testhost.cloudflare_standin import CloudflareStandin
from tests.harness import (
    CloudMocks,
    ManagedDbAnswers,
    Recording,
    SpacesAnswers,
    changed_steps,
    config_strings,
    record,
)

DOMAIN = "example.test"
HOMESERVER = f"https://matrix.{DOMAIN}"
# Each concurrent test session needs its own host indexes (network 198.18.<index>.0/30): the shared
# deployment uses E2E_INDEX, the lifecycle tests' replaced-droplet hosts E2E_INDEX + 100 and + 101, the
# federation tests' other servers E2E_INDEX + 102 and + 103, the TURN droplet's E2E_INDEX + 104, the
# managed cluster's E2E_INDEX + 105, the fresh droplet restoring from Spaces E2E_INDEX + 106.
E2E_INDEX = int(os.environ.get("MATRIX_STACK_E2E_INDEX", "21"))
if not 0 <= E2E_INDEX <= 149:
    raise ValueError(f"MATRIX_STACK_E2E_INDEX={E2E_INDEX}: use 0..149 (the lifecycle, federation, TURN droplet, "
                     "managed database and Spaces tests also take index + 100 to + 106)")
# The shared deployment's droplet image follows the test hosts' default release (MATRIX_STACK_E2E_RELEASE).
E2E_IMAGE = rootfs.DEFAULT_IMAGE
ELEMENT_PORT = 8088
# The default release, and a later one whose tarball a compromised mirror swapped after signing.
ELEMENT_VERSIONS = (DEFAULTS["elementVersion"],)
ELEMENT_TAMPERED = "1.12.99"


@dataclass
class Deployment:
    """A deployed test host and everything a test needs to talk to it."""

    host: TestHost
    config: dict[str, Any]
    key_file: Path
    public_key: str
    releases: dict[str, ElementRelease]
    host_key_file: Path  # the droplet's SSH host key the program "generated" (pulumi-tls under mocks)
    recording: Recording | None = None
    results: list[StepResult] = field(default_factory=list)
    provisioning: list[StepResult] = field(default_factory=list)  # the first full run, as a fresh droplet saw it
    stack: str = "test"
    secret_seed: str = ""  # another seed is another stack life: every generated secret differs
    kept_volumes: dict[str, dict[str, Any]] = field(default_factory=dict)  # what getVolume finds in the account
    edge: Edge | None = None  # Cloudflare's edge: every web request of the tests goes through it
    turn_host: TestHost | None = None  # the TURN droplet (turnDroplet), when a test has one
    managed_db: ManagedDbAnswers | None = None  # what DigitalOcean answers for the cluster (database: managed)
    spaces: SpacesAnswers | None = None  # what DigitalOcean answers for the bucket and key (mediaStorage: spaces)
    engine: Engine | None = None  # `pulumi up` for this stack, with its state of the cloud resources

    @property
    def domain(self) -> str:
        return str(self.config["domain"])

    @property
    def settings(self) -> Settings:
        return settings_of(self.config, self.stack)

    @property
    def homeserver(self) -> str:
        return f"https://matrix.{self.domain}"

    @property
    def mocks(self) -> CloudMocks:
        # The zone as it is now: the program reads it through the provider's functions (records, rules,
        # certificates, plan); before the host boots, an empty zone.
        zone = self.host.cloudflare or CloudflareStandin(None, 0, self.domain)
        host_key = (self.host_key_file.read_text(), Path(f"{self.host_key_file}.pub").read_text())
        return CloudMocks(
            zones={self.domain: zone},
            droplet_ipv4=self.host.address,
            droplet_ipv6="2001:db8::2",  # documentation prefix: the guest has no IPv6 on its link
            cloudflare_ipv4=[f"{self.host.host_side_address}/32"],
            cloudflare_ipv6=[],
            deploy_key=(self.key_file.read_text(), self.public_key),
            host_key=host_key,
            # The TURN droplet: its own address; the same generated host key serves it here.
            turn_ipv4=self.turn_host.address if self.turn_host is not None else "192.0.2.20",
            turn_host_key=host_key,
            secret_seed=self.secret_seed,
            volumes=self.kept_volumes,
            managed_db=self.managed_db,
            spaces=self.spaces,
        )

    def record(self, **changes: Any) -> Recording:
        """Run the program under mocks with `changes` applied to the config.

        Pulumi's mock runtime runs on the current event loop and opens more of its own without closing
        them; once the clients' asyncio.run() has replaced them they are garbage whose ResourceWarning
        (an error in this suite) would land in whichever later test collects it. So every idle loop is
        closed around the recording.
        """
        config = {**self.config, **changes}  # kept only once recorded: a failed recording changes nothing
        _close_idle_event_loops()
        asyncio.set_event_loop(asyncio.new_event_loop())
        try:
            self.recording = record(config, mocks=self.mocks, stack=self.stack)
        finally:
            asyncio.set_event_loop(None)
            _close_idle_event_loops()
        self.config = config
        return self.recording

    def up(self, steps: set[str] | None) -> list[StepResult]:
        """`pulumi up` of the current recording: the cloud resources into the zone's stand-in and `steps` (None:
        all) on the host, each as soon as what it depends on is done (tests/e2e/engine.py); DNS answers
        follow the zone's records."""
        assert self.recording is not None and self.host.cloudflare is not None
        if self.engine is None or self.engine.zone is not self.host.cloudflare:
            self.engine = Engine(self.host.cloudflare, recorded_credentials(self.recording))
        results = self.engine.up(self.recording, steps, on_cloud=self.edge.publish_dns if self.edge else None)
        if self.edge is not None:
            self.edge.publish_dns()
        return results

    def apply_cloud(self) -> None:
        """The recorded Cloudflare resources into the zone's stand-in, no step."""
        self.up(set())

    def apply(self, only: set[str] | None = None, **changes: Any) -> list[StepResult]:
        """Record the program with `changes`, apply its cloud resources and run its steps (all, or `only`)."""
        self.record(**changes)
        self.results = self.up(only)
        if only is None and not self.provisioning:
            self.provisioning = self.results
        return self.results

    def apply_changes(self, **changes: Any) -> tuple[set[str], list[StepResult]]:
        """Apply config changes the way `pulumi up` would: run only the steps whose triggers changed.

        A value of None removes the key (back to the program's default). Returns the changed steps
        and their results; `results` keeps the last full run.
        """
        assert self.recording is not None, "apply() first"
        before = self.recording
        for key in [k for k, v in changes.items() if v is None]:
            self.config.pop(key, None)
        after = self.record(**{k: v for k, v in changes.items() if v is not None})
        changed = changed_steps(before, after)
        return changed, self.up(changed)

    def ssh(self, command: str, stdin: str | None = None, timeout: float = 300) -> str:
        proc = self.host.ssh(command, stdin=stdin.encode() if stdin is not None else None, timeout=timeout)
        if proc.returncode != 0:
            raise AssertionError(f"{command!r} exited {proc.returncode}: {proc.stderr.decode()[-2000:]}")
        return proc.stdout.decode()

    @property
    def user_data(self) -> str:
        """The user data the program declares on the droplet, exactly as recorded."""
        assert self.recording is not None
        (droplet,) = self.recording.of_type("digitalocean:index/droplet:Droplet")
        return str(droplet.inputs["userData"])

    @property
    def admin_password(self) -> str:
        assert self.recording is not None
        return str(self.recording.stack_outputs["adminPassword"][0])

    @property
    def ca_file(self) -> Path:
        """What web clients trust: the edge's CA (as everyone trusts Cloudflare's certificates)."""
        assert self.edge is not None
        return self.edge.ca_file

    @property
    def origin_ca_file(self) -> Path:
        """The ACME server's root: what the origin's own certificate (nginx, coturn) chains to."""
        return self.host.client_ca_file

    @property
    def edge_address(self) -> str:
        """Where the web names resolve for the tests: the edge, on this host's side of its network."""
        return self.host.host_side_address

    def url(self, name: str, path: str) -> str:
        host = {"apex": self.domain, "matrix": f"matrix.{self.domain}", "chat": f"chat.{self.domain}"}[name]
        return f"https://{host}{path}"


def _close_idle_event_loops() -> None:
    for obj in gc.get_objects():
        if isinstance(obj, asyncio.AbstractEventLoop):
            close_if_idle(obj)


def close_if_idle(loop: asyncio.AbstractEventLoop) -> None:
    """Close a loop nobody runs; skip one the collector already finalized."""
    if loop.is_closed() or loop.is_running():
        return
    self_pipe = getattr(loop, "_ssock", None)
    if self_pipe is not None and self_pipe.fileno() == -1:
        # A loop that became garbage unclosed: the collector already finalized it (its sockets closed) and the
        # ResourceWarning its finalizer raised, kept by the warnings recorder, holds it alive. Nothing of it is
        # left to close; close() would fail on the closed self-pipe.
        return
    loop.close()


def base_config(host: TestHost, release: ElementRelease) -> dict[str, Any]:
    return {
        "domain": host.domain,
        "sshAllowedCidrs": [f"{host.host_side_address}/32"],
        "letsencryptEmail": f"ops@{host.domain}",
        "certbotCloudflareToken": "e2e-cloudflare-token-0123456789",
        "acmeServer": host.acme_directory,
        "elementVersion": release.version,
        "elementDownloadUrl": release.url_template,
        "elementSigningKey": release.signing_key,
        "elementSigningFingerprint": release.signing_fingerprint,
    }


def settings_of(config: dict[str, Any], stack: str = "test") -> Settings:
    """The program's validated settings for a test config, as `pulumi up` would load them."""
    plain = {k.split(":", 1)[1]: v for k, v in config_strings(config).items()}
    return load(plain, stack)[0]


def volume_name_for(config: dict[str, Any], stack: str = "test") -> str:
    return settings_of(config, stack).volume_name


def _keypair(path: Path, comment: str) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)
    return Path(f"{path}.pub").read_text().strip()


@contextlib.contextmanager
def deployed_host(index: int, volume_image: Path, outsider: bool = True, stack: str = "test",
                  secret_seed: str = "", adopt: bool = False, domain: str = DOMAIN,
                  droplet_image: str = E2E_IMAGE, zone_setup: Callable[[TestHost], None] | None = None,
                  **host_options: Any) -> Iterator[Deployment]:
    """Create a test "droplet" as the engine would: the program is recorded first, then the host boots
    with the user data it declares (cloud-init installs the pinned host key), on the given volume
    image, with its stand-ins; all of it is torn down afterwards.

    `stack` and `secret_seed` make it another stack and another stack life (other generated secrets);
    `adopt` has it adopt the volume a destroyed stack kept (`adoptVolume`), which DigitalOcean then
    lists as detached. `domain` is the server's name (its own zone). Web traffic goes through the
    shared edge stand-in, which also answers for this host's zone once it is up. `droplet_image` is the
    stack's dropletImage, and the test host boots that image's Debian release. The volume image is
    kept (a later host can boot on the same "volume"); the caller removes it. Nothing is provisioned
    yet: call `apply()`.
    """
    TestHost.cleanup(index)
    workdir = Path(tempfile.mkdtemp(prefix="matrix-stack-e2e-"))
    key_file, host_key_file = workdir / "deploy_key", workdir / "host_key"
    public_key = _keypair(key_file, "matrix-stack-deploy")
    _keypair(host_key_file, "")
    placeholder = {"domain": domain, "sshAllowedCidrs": ["198.18.0.1/32"], "letsencryptEmail": f"ops@{domain}",
                   "certbotCloudflareToken": "e2e-cloudflare-token-0123456789"}
    # The stack's own volume; an adopted one keeps the name the stack "test" gave it.
    volume_name = volume_name_for(placeholder, "test" if adopt else stack)
    edge = shared_edge(lambda: Path(tempfile.mkdtemp(prefix="matrix-stack-edge-", dir="/var/tmp")))
    host = TestHost(index, public_key, volume_name, domain, volume_image, identity_file=key_file,
                    outsider=outsider, edge_ca=edge.ca_cert, release=rootfs.release_of(droplet_image), **host_options)
    try:
        releases = build_releases(host.host_side_address, ELEMENT_PORT, workdir, ELEMENT_VERSIONS,
                                  tampered=(ELEMENT_TAMPERED,))
        config = base_config(host, releases[ELEMENT_VERSIONS[0]])
        if droplet_image != DEFAULTS["dropletImage"]:
            config["dropletImage"] = droplet_image
        kept: dict[str, dict[str, Any]] = {}
        if adopt:
            config["adoptVolume"] = volume_name
            kept[volume_name] = {"id": f"kept-{volume_name}", "size": DEFAULTS["volumeSizeGb"], "filesystemType": "xfs",
                                 "description": volume_description(domain),
                                 "dropletIds": [], "region": DEFAULTS["region"]}
        deployment = Deployment(host, config, key_file, public_key, releases, host_key_file, stack=stack,
                                secret_seed=secret_seed, kept_volumes=kept, edge=edge)
        deployment.record()
        host.user_data = deployment.user_data
        host.boot()
        assert host.cloudflare is not None and host.pebble is not None
        edge.attach(host.host_side_address, host.cloudflare, host.pebble.challtestsrv_url,
                    host.client_ca_file.read_text())
        if zone_setup is not None:
            zone_setup(host)
        deployment.record()  # the program reads the zone (now up, as the user has it) before any resource
        deployment.apply_cloud()
        with release_server(host.host_side_address, ELEMENT_PORT, workdir):
            yield deployment
    finally:
        if host.cloudflare is not None:
            edge.detach(host.host_side_address, host.cloudflare)
        host.destroy(keep_volume=True)
        shutil.rmtree(workdir, ignore_errors=True)  # the keys and the Element tarballs
