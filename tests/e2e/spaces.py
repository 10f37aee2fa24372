"""A stand-in for DigitalOcean Spaces: moto's S3 server over TLS, reachable from the test droplets.

DigitalOcean's S3 API is unreachable here; moto (from the package index) answers the same S3 calls
that boto3 makes for Synapse's storage provider, its upload script and matrix-stack-spaces. It
listens on an address of its own in the host's namespace (the edge stand-in holds port 443 on each
host's side), under a name that only the droplets resolve, with a certificate from the edge
stand-in's CA, which the droplets trust like a public CA (the program points boto3 at the
droplet's trust store). The program's recorded answers (the bucket's endpoint) name it.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import boto3

from tests import pki
from tests.e2e.testhost import TestHost
from tests.e2e.testhost._proc import run, stop_popen, wait_until
from tests.harness import SpacesAnswers

ADDRESS = "198.19.255.254"  # outside every test host's /30s (198.18.N.0/30, 198.19.N.0/30 for N < 255)
ENDPOINT = "nyc3.spaces.e2e.invalid"  # what the bucket's `endpoint` output answers
REGION = "nyc3"


class SpacesStandin:
    """moto_server on ADDRESS:443 with TLS for ENDPOINT; `reach_from` wires a test droplet to it."""

    def __init__(self, ca_key: str, ca_cert: str, bucket: str) -> None:
        self.ca_cert = ca_cert
        self.bucket = bucket
        self.answers = SpacesAnswers(endpoint=ENDPOINT, access_key="DO801E2ESPACESKEY000",
                                     secret_key="e2e/Spaces+Secret0key0000000000000000000000")
        self.workdir = Path(tempfile.mkdtemp(prefix="matrix-stack-spaces-"))
        # The droplets ask by name; the test itself by address (the name resolves in the droplets only).
        cert, key = pki.server_cert("spaces stand-in", ca_key, ca_cert, [ENDPOINT, ADDRESS])
        (self.workdir / "cert.pem").write_text(cert)
        (self.workdir / "key.pem").write_text(key)
        (self.workdir / "ca.pem").write_text(ca_cert)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """The address (on the host's loopback: local to the host's namespace, routed to by each
        droplet), the server, and the bucket DigitalOcean would create."""
        run(["ip", "addr", "replace", f"{ADDRESS}/32", "dev", "lo"])
        moto = Path(sys.executable).with_name("moto_server")
        self.proc = subprocess.Popen(
            [str(moto), "-H", ADDRESS, "-p", "443", "-c", str(self.workdir / "cert.pem"), "-k", str(self.workdir / "key.pem")],
            stdout=(self.workdir / "moto.log").open("wb"), stderr=subprocess.STDOUT,
            # Spaces takes the bucket from the path on its regional endpoint (boto3 asks path-style
            # there); moto would otherwise read the endpoint's first label as a bucket name.
            env={**os.environ, "S3_IGNORE_SUBDOMAIN_BUCKETNAME": "true"})

        def answers() -> bool:
            try:
                self.client().list_buckets()
                return True
            except Exception:  # not listening yet
                return False

        wait_until("the Spaces stand-in to answer", answers, 60)
        self.client().create_bucket(Bucket=self.bucket, CreateBucketConfiguration={"LocationConstraint": REGION})

    def client(self) -> Any:
        """boto3 as the test sees the bucket: by address, the certificate checked against the CA."""
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=f"https://{ADDRESS}", region_name=REGION,
                            aws_access_key_id=self.answers.access_key, aws_secret_access_key=self.answers.secret_key,
                            verify=str(self.workdir / "ca.pem"),
                            config=Config(proxies={}, connect_timeout=5, retries={"max_attempts": 2}))

    def objects(self, prefix: str) -> dict[str, bytes]:
        """Every object under `prefix`, with its bytes."""
        s3 = self.client()
        found = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                found[item["Key"]] = s3.get_object(Bucket=self.bucket, Key=item["Key"])["Body"].read()
        return found

    def reach_from(self, host: TestHost) -> None:
        """The droplet's route to the stand-in, its name in /etc/hosts (DigitalOcean's public DNS), and no
        test proxy in between (a real droplet has none)."""
        run(["ip", "-n", host.addr.netns, "route", "replace", f"{ADDRESS}/32", "via", host.addr.host_side])
        line = shlex.quote(f"{ADDRESS} {ENDPOINT}")
        proc = host.ssh(f"grep -qxF {line} /etc/hosts || echo {line} >> /etc/hosts; "
                        f"sed -i -E 's/^(no_proxy|NO_PROXY)=(.*)$/\\1=\\2,{ENDPOINT}/' /etc/environment")
        assert proc.returncode == 0, proc.stderr.decode()

    def stop(self) -> None:
        if self.proc is not None:
            stop_popen(self.proc)
            self.proc = None
        run(["ip", "addr", "del", f"{ADDRESS}/32", "dev", "lo"], check=False)
