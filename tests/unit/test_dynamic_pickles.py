"""The program's dynamic providers as existing stacks' states hold them still load and work.

Pulumi stores a dynamic resource's provider in its state, pickled with dill by reference to its module and
class (`__provider`), and loads it from there for every `refresh`, `destroy` and later `up`. Renaming or
moving the module or class, or a method that reads an attribute older pickles lack, would break every
existing stack. The fixtures are providers pickled by earlier code (the file names say which): each is
loaded through pulumi's own dynamic-provider host, configured as the engine does, and used against the
API stand-in.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from pulumi.runtime import proto, rpc
from pulumi.runtime.proto import provider_pb2_grpc

from tests.e2e.testhost.cloudflare_standin import CloudflareStandin
from tests.harness import CLOUDFLARE_TOKEN, ROOT

FIXTURES = Path(__file__).with_name("fixtures")
PROVIDER_KEY = "__provider"


@pytest.fixture
def standin(zone_api: CloudflareStandin) -> CloudflareStandin:
    return zone_api
class DynamicHost:
    """pulumi's dynamic provider host (`python -m pulumi.dynamic`, started in the project's directory as the
    engine starts it), spoken to over its gRPC interface."""

    def __init__(self, standin: CloudflareStandin) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "pulumi.dynamic"], cwd=ROOT, stdout=subprocess.PIPE)
        assert self.process.stdout is not None
        port = int(self.process.stdout.readline())
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = provider_pb2_grpc.ResourceProviderStub(self.channel)
        self.stub.Configure(proto.ConfigureRequest(args=self.struct(
            {"cloudflare:apiToken": CLOUDFLARE_TOKEN, "cloudflare:baseUrl": standin.url})))

    @staticmethod
    def struct(values: dict[str, Any]) -> Any:
        return asyncio.run(rpc.serialize_properties(values, {}))

    def create(self, pickled: str, props: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        answer = self.stub.Create(proto.CreateRequest(urn="urn:pulumi:test::matrix-stack::x::y",
                                                      properties=self.struct({PROVIDER_KEY: pickled, **props})))
        return answer.id, rpc.deserialize_properties(answer.properties)

    def read(self, id_: str, outs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        answer = self.stub.Read(proto.ReadRequest(id=id_, urn="urn:pulumi:test::matrix-stack::x::y",
                                                  properties=self.struct(outs)))
        return answer.id, rpc.deserialize_properties(answer.properties)

    def delete(self, id_: str, outs: dict[str, Any]) -> None:
        self.stub.Delete(proto.DeleteRequest(id=id_, urn="urn:pulumi:test::matrix-stack::x::y",
                                             properties=self.struct(outs)))

    def close(self) -> None:
        self.channel.close()
        self.process.kill()
        self.process.wait()
        assert self.process.stdout is not None
        self.process.stdout.close()


@pytest.fixture
def host(standin: CloudflareStandin) -> Iterator[DynamicHost]:
    dynamic = DynamicHost(standin)
    try:
        yield dynamic
    finally:
        dynamic.close()


def pickled(fixture: str) -> str:
    return (FIXTURES / fixture).read_text().strip()


def test_a_zone_rule_provider_pickled_by_the_code_of_f1e4c8f_still_creates_reads_and_deletes(
    standin: CloudflareStandin, host: DynamicHost
) -> None:
    phase = "http_request_firewall_custom"
    props = {"zone_id": standin.zone_id, "phase": phase, "ref": "prod-skip",
             "description": "d", "expression": '(http.host eq "matrix.example.org")', "action": "skip",
             "action_parameters": {"ruleset": "current"}}
    id_, outs = host.create(pickled("zone-rule-provider.f1e4c8f.b64"), props)
    assert [r["ref"] for r in standin.rules_of(phase)] == ["prod-skip"]
    assert host.read(id_, outs)[0] == id_
    host.delete(id_, outs)
    assert standin.rules_of(phase) == []


def test_a_bot_fight_mode_provider_pickled_in_december_2026_still_works(
    standin: CloudflareStandin, host: DynamicHost
) -> None:
    host.create(pickled("bot-fight-mode-off-provider.2026-12.b64"), {"zone_id": standin.zone_id, "fight_mode": False})
    assert standin.bot_fight_mode is False


def test_an_origin_pulls_wait_pickled_in_december_2026_still_works(standin: CloudflareStandin, host: DynamicHost) -> None:
    base = f"/client/v4/zones/{standin.zone_id}/origin_tls_client_auth/hostnames"
    certificate = standin.handle("POST", f"{base}/certificates", {}, {
        "certificate": "-----BEGIN CERTIFICATE-----\nx\n", "private_key": "-----BEGIN PRIVATE KEY-----\nx\n"})[1]
    standin.handle("PUT", base, {}, {"config": [{"hostname": "matrix.example.org", "cert_id": certificate["id"],
                                                 "enabled": True}]})
    _, outs = host.create(pickled("origin-pulls-ready-provider.2026-12.b64"), {
        "zone_id": standin.zone_id, "certificate_id": certificate["id"], "hostnames": ["matrix.example.org"]})
    assert outs["active"] is True
