"""`pulumi up` of a recorded program, as the engine does it, against the Cloudflare API stand-in and the test
host: every resource starts as soon as the resources it depends on are done, independent ones at the same
time (the engine's parallelism, `--parallel` unbounded by default), and deletions come last.

What each resource does is what its provider does:
- Cloudflare resources: the calls terraform-provider-cloudflare v5.19.1 makes for them (DNS records: POST,
  PUT, DELETE; per-hostname origin-pull certificates: POST, replaced by a new upload on any change, DELETE;
  hostname associations: PUT .../hostnames with one config, `enabled: null` to void), over HTTP to the zone's
  stand-in, which keeps Cloudflare's semantics (tests/e2e/testhost/cloudflare_standin.py);
- the program's dynamic resources: their own provider, unpickled from the recorded `__provider` exactly as
  pulumi's dynamic provider host does it, configured with the stack's Cloudflare credentials and the
  stand-in's URL, then create, diff, update or delete;
- remote commands: their `create` over SSH (tests/e2e/runner.py), for the steps asked for;
- everything else (DigitalOcean, tls, random, components): already reflected by the mocks and the test host.

`CloudState` is the engine's state of the cloud resources: what was applied, under which real ids. The
mocks' answers (a certificate's id, say) stand in dependents' inputs for the values the API gave; they are
mapped to those before a dependent is applied.
"""

from __future__ import annotations

import base64
import concurrent.futures
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dill
from pulumi.dynamic import ConfigureRequest, ResourceProvider
from pulumi.dynamic.config import Config

from tests.e2e.runner import StepResult, deploy_key_file, run_reported_step
from tests.e2e.testhost.cloudflare_standin import API, CloudflareStandin
from tests.harness import COMMAND, PROJECT, Recording, Registration, unwrap

DYNAMIC = "pulumi-python:dynamic:Resource"
DNS_RECORD = "cloudflare:index/dnsRecord:DnsRecord"
CERTIFICATE = "cloudflare:index/authenticatedOriginPullsHostnameCertificate:AuthenticatedOriginPullsHostnameCertificate"
ASSOCIATION = "cloudflare:index/authenticatedOriginPulls:AuthenticatedOriginPulls"
APPLIED_TYPES = (DYNAMIC, DNS_RECORD, CERTIFICATE, ASSOCIATION)
PROVIDER_KEY = "__provider"


class CloudflareCallFailed(RuntimeError):
    """The provider's call was refused; the message is the API's error, as `pulumi up` prints it."""


@dataclass
class Applied:
    type: str
    id: str
    inputs: dict[str, Any]  # as recorded (mock values)
    outs: dict[str, Any]
    provider: str = ""  # a dynamic resource's pickled provider


@dataclass
class CloudState:
    resources: dict[str, Applied] = field(default_factory=dict)  # by URN
    real: dict[str, str] = field(default_factory=dict)  # a mock's id -> the id the API gave
    lock: threading.Lock = field(default_factory=threading.Lock)


def _real(value: Any, real: dict[str, str]) -> Any:
    if isinstance(value, str):
        return real.get(value, value)
    if isinstance(value, list):
        return [_real(v, real) for v in value]
    if isinstance(value, dict):
        return {k: _real(v, real) for k, v in value.items()}
    return value


def load_provider(pickled: str, credentials: dict[str, str], zone: CloudflareStandin) -> ResourceProvider:
    """The dynamic provider as pulumi's provider host makes it (dill from base64, then `configure`)."""
    provider: ResourceProvider = dill.loads(base64.b64decode(pickled))
    provider.configure(ConfigureRequest(Config({**credentials, "cloudflare:baseUrl": zone.url}, PROJECT)))
    if hasattr(provider, "poll_seconds"):  # the origin-pulls wait: the stand-in deploys in seconds, not minutes
        provider.poll_seconds = 0.2
    return provider


class Engine:
    """Applies recordings of one stack to its zone and host, keeping the state between them."""

    def __init__(self, zone: CloudflareStandin, credentials: dict[str, str], state: CloudState | None = None) -> None:
        self.zone = zone
        self.credentials = credentials
        self.state = state or CloudState()

    # -- the Cloudflare provider's calls ----------------------------------------------------------
    def _call(self, method: str, path: str, body: Any = None) -> Any:
        status, result = self.zone.handle(method, f"{API}/zones/{self.zone.zone_id}{path}", {}, body)
        if status != 200:
            raise CloudflareCallFailed(f"{method} {path}: HTTP {status}: {result}")
        return result

    def _create(self, reg: Registration, inputs: dict[str, Any]) -> Applied:
        if reg.type == DNS_RECORD:
            body = {k: inputs[k] for k in ("name", "type", "content", "ttl", "proxied", "comment") if k in inputs}
            return Applied(reg.type, self._call("POST", "/dns_records", body)["id"], reg.inputs, {})
        if reg.type == CERTIFICATE:
            answer = self._call("POST", "/origin_tls_client_auth/hostnames/certificates",
                                {"certificate": inputs["certificate"], "private_key": inputs["privateKey"]})
            return Applied(reg.type, answer["id"], reg.inputs, answer)
        if reg.type == ASSOCIATION:
            configs = [{"hostname": c["hostname"], "cert_id": c.get("certId"), "enabled": c.get("enabled")}
                       for c in inputs["configs"]]
            self._call("PUT", "/origin_tls_client_auth/hostnames", {"config": configs})
            return Applied(reg.type, configs[0]["hostname"], reg.inputs, {"certId": configs[0]["cert_id"]})
        pickled = str(reg.raw_inputs[PROVIDER_KEY])
        props = {k: v for k, v in inputs.items() if k != PROVIDER_KEY}
        result = load_provider(pickled, self.credentials, self.zone).create(props)
        return Applied(reg.type, str(result.id), reg.inputs, dict(result.outs or {}), pickled)

    def _update(self, reg: Registration, old: Applied, inputs: dict[str, Any]) -> Applied | None:
        """An in-place update; None when the provider replaces the resource instead."""
        if reg.type == DNS_RECORD:
            if any(old.inputs.get(k) != reg.inputs.get(k) for k in ("type", "zoneId")):
                return None
            body = {k: inputs[k] for k in ("name", "type", "content", "ttl", "proxied", "comment") if k in inputs}
            self._call("PUT", f"/dns_records/{old.id}", body)
            return Applied(reg.type, old.id, reg.inputs, {})
        if reg.type == CERTIFICATE:
            return None  # every input forces a new upload
        if reg.type == ASSOCIATION:
            hostnames = [c["hostname"] for c in reg.inputs["configs"]] != [c["hostname"] for c in old.inputs["configs"]]
            if hostnames and reg.replace_on_changes:
                return None
            return self._create(reg, inputs)
        provider = load_provider(str(reg.raw_inputs[PROVIDER_KEY]), self.credentials, self.zone)
        news = {k: v for k, v in inputs.items() if k != PROVIDER_KEY}
        diff = provider.diff(old.id, old.outs, news)
        if diff.replaces:
            return None
        if not diff.changes:
            return Applied(reg.type, old.id, reg.inputs, old.outs, old.provider)
        result = provider.update(old.id, old.outs, news)
        return Applied(reg.type, old.id, reg.inputs, dict(result.outs or {}), old.provider)

    def _delete(self, old: Applied) -> None:
        if old.type == DNS_RECORD:
            self._call("DELETE", f"/dns_records/{old.id}")
        elif old.type == CERTIFICATE:
            self._call("DELETE", f"/origin_tls_client_auth/hostnames/certificates/{old.id}")
        elif old.type == ASSOCIATION:  # the provider voids the association (enabled: null)
            self._call("PUT", "/origin_tls_client_auth/hostnames", {"config": [
                {"hostname": old.id, "cert_id": old.outs.get("certId"), "enabled": None}]})
        else:
            load_provider(old.provider, self.credentials, self.zone).delete(old.id, old.outs)

    def _apply_cloud(self, reg: Registration, deferred: list[Applied]) -> None:
        """Create, update or replace one cloud resource; replaced ones to delete go to `deferred`."""
        with self.state.lock:
            old = self.state.resources.get(reg.urn)
            inputs = _real(reg.inputs, self.state.real)
        if old is not None and old.inputs == reg.inputs and old.type != DYNAMIC:
            return
        applied = self._update(reg, old, inputs) if old is not None else None
        if applied is None:
            if old is not None and reg.delete_before_replace:
                self._delete(old)
            elif old is not None:
                deferred.append(old)
            applied = self._create(reg, inputs)
        with self.state.lock:
            self.state.resources[reg.urn] = applied
            self.state.real[reg.id] = applied.id

    # -- the run ----------------------------------------------------------------------------------
    def up(self, recording: Recording, steps: Iterable[str] | None = (),
           on_step: Callable[[StepResult], None] | None = None,
           on_cloud: Callable[[], None] | None = None) -> list[StepResult]:
        """Apply every cloud resource of `recording` and run the steps named in `steps` (None: all of them),
        each once its dependencies are done; then delete what the recording no longer has. `on_cloud` is
        called after each DNS record is applied (what DNS answers follows the zone)."""
        published = threading.Lock()
        wanted = None if steps is None else set(steps)
        tasks = {r.urn: r for r in recording.registrations
                 if r.custom and (r.type in APPLIED_TYPES or r.type == COMMAND)}
        results: list[StepResult] = []
        deferred: list[Applied] = []
        with tempfile.TemporaryDirectory(prefix="matrix-stack-engine-") as tmp:
            key = deploy_key_file(recording, Path(tmp)) if recording.commands() else None

            def run(reg: Registration) -> None:
                if reg.type != COMMAND:
                    self._apply_cloud(reg, deferred)
                    if reg.type == DNS_RECORD and on_cloud is not None:
                        with published:
                            on_cloud()
                    return None
                if wanted is not None and reg.name not in wanted:
                    return None
                assert key is not None
                run_reported_step(reg, key, results, on_step)
                return None

            done: set[str] = set()
            with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
                running: dict[concurrent.futures.Future[None], str] = {}
                failure: BaseException | None = None
                while len(done) < len(tasks):
                    if failure is None:
                        for urn, reg in tasks.items():
                            if urn not in done and urn not in running.values() and \
                                    all(d in done or d not in tasks for d in reg.dependencies):
                                running[pool.submit(run, reg)] = urn
                    if not running:
                        break
                    finished, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
                    for future in finished:
                        done.add(running.pop(future))
                        if future.exception() is not None and failure is None:
                            failure = future.exception()
                if failure is not None:
                    raise failure
        kept = {r.urn for r in recording.registrations}
        for urn in [u for u in self.state.resources if u not in kept]:  # gone from the program: deleted
            deferred.append(self.state.resources.pop(urn))
        for old in reversed(deferred):
            self._delete(old)
        return results


def recorded_credentials(recording: Recording) -> dict[str, str]:
    """The Cloudflare provider's config the program ran with."""
    return {k: str(unwrap(v)) for k, v in recording.config.items() if k.startswith("cloudflare:")}
