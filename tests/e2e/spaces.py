"""A stand-in for DigitalOcean Spaces: moto's S3 server over TLS, reachable from the test droplets.

DigitalOcean's S3 API is unreachable here; moto (from the package index) answers the same S3 calls
that boto3 makes for Synapse's storage provider, its upload script and matrix-stack-spaces. It
listens on an address of its own in the host's namespace (the edge stand-in holds port 443 on each
host's side), under a name that only the droplets resolve, with a certificate from the edge
stand-in's CA, which the droplets trust like a public CA (the program points boto3 at the
droplet's trust store). The program's recorded answers (the bucket's endpoint, the keys) name it.

Like Spaces, it checks every request's key and what that key was granted: moto's IAM is on (after the
few unauthenticated calls that set it up), each Spaces key the program creates is an IAM user whose
policy is the key's recorded grants (a bucket each, never a prefix), and the buckets are made as the
recorded SpacesBucket resources say (versioning included). The test itself uses an admin key.
"""

from __future__ import annotations

import json
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
from tests.harness import Recording, SpacesAnswers, unwrap

ADDRESS = "198.19.255.254"  # outside every test host's /30s (198.18.N.0/30, 198.19.N.0/30 for N < 255)
ENDPOINT = "nyc3.spaces.e2e.invalid"  # what the bucket's `endpoint` output answers
REGION = "nyc3"
# moto answers this many requests before it checks keys: enough to make the admin user and its key.
UNAUTHENTICATED_SETUP = 8
# A Spaces key's grants as IAM actions (DigitalOcean's read / readwrite / fullaccess).
GRANTED_ACTIONS = {"read": ["s3:GetObject", "s3:ListBucket", "s3:GetObjectVersion", "s3:ListBucketVersions"],
                   "readwrite": ["s3:*"], "fullaccess": ["s3:*"]}


class SpacesStandin:
    """moto_server on ADDRESS:443 with TLS for ENDPOINT; `reach_from` wires a test droplet to it."""

    def __init__(self, ca_key: str, ca_cert: str, bucket: str) -> None:
        self.ca_cert = ca_cert
        self.bucket = bucket  # the media bucket
        self.answers = SpacesAnswers(endpoint=ENDPOINT)  # the keys come from the server's IAM (start)
        self.admin: tuple[str, str] = ("", "")
        self.users: dict[str, str] = {}  # access key -> its IAM user
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
            env={**os.environ, "S3_IGNORE_SUBDOMAIN_BUCKETNAME": "true",
                 "INITIAL_NO_AUTH_ACTION_COUNT": str(UNAUTHENTICATED_SETUP)})
        setup = ("AKIASETUP00000000000", "setup")

        def answers() -> bool:
            try:
                self._client("iam", setup).list_users()
                return True
            except Exception:  # not listening yet
                return False

        wait_until("the Spaces stand-in to answer", answers, 60)
        iam = self._client("iam", setup)
        iam.create_user(UserName="e2e-admin")
        iam.put_user_policy(UserName="e2e-admin", PolicyName="everything", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        created = iam.create_access_key(UserName="e2e-admin")["AccessKey"]
        self.admin = (created["AccessKeyId"], created["SecretAccessKey"])
        # From here on every request needs a key: spend what is left of the unauthenticated ones.
        stranger = self._client("s3", ("AKIASTRANGER00000000", "nothing"))
        for _ in range(UNAUTHENTICATED_SETUP):
            try:
                stranger.list_buckets()
            except Exception:
                break
        else:
            raise AssertionError("the Spaces stand-in does not check keys")
        # The two keys DigitalOcean will answer for the program's SpacesKey resources; their grants come
        # with the recording (apply).
        pairs = [self._new_key(f"spaces-key-{i}") for i in range(2)]
        self.answers = SpacesAnswers(endpoint=ENDPOINT, access_key=pairs[0][0], secret_key=pairs[0][1],
                                     backup_access_key=pairs[1][0], backup_secret_key=pairs[1][1])

    def _new_key(self, user: str) -> tuple[str, str]:
        iam = self._client("iam", self.admin)
        iam.create_user(UserName=user)
        created = iam.create_access_key(UserName=user)["AccessKey"]
        self.users[created["AccessKeyId"]] = user
        return created["AccessKeyId"], created["SecretAccessKey"]

    def apply(self, recording: Recording) -> None:
        """What DigitalOcean holds once `pulumi up` created the recorded buckets and keys: each bucket
        (versioned if so declared), each key allowed its grants' buckets and nothing else."""
        s3, iam = self.client(), self._client("iam", self.admin)
        existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        for bucket in recording.of_type("digitalocean:index/spacesBucket:SpacesBucket"):
            name = bucket.inputs["name"]
            if name not in existing:
                s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
            if (bucket.inputs.get("versioning") or {}).get("enabled"):
                s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        for key in recording.of_type("digitalocean:index/spacesKey:SpacesKey"):
            user = self.users[str(unwrap(key.raw_outputs["accessKey"]))]
            statements = [{"Effect": "Allow", "Action": GRANTED_ACTIONS[grant["permission"]],
                           "Resource": [f"arn:aws:s3:::{grant['bucket']}", f"arn:aws:s3:::{grant['bucket']}/*"]}
                          for grant in key.inputs.get("grants", [])]
            iam.put_user_policy(UserName=user, PolicyName="grants", PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": statements}))

    def _client(self, service: str, key: tuple[str, str]) -> Any:
        from botocore.config import Config

        return boto3.client(service, endpoint_url=f"https://{ADDRESS}", region_name=REGION,
                            aws_access_key_id=key[0], aws_secret_access_key=key[1], verify=str(self.workdir / "ca.pem"),
                            config=Config(proxies={}, connect_timeout=5, retries={"max_attempts": 2}))

    def client(self) -> Any:
        """boto3 as the test sees the buckets: by address, the certificate checked against the CA, an admin key."""
        return self._client("s3", self.admin)

    def objects(self, prefix: str, bucket: str | None = None) -> dict[str, bytes]:
        """Every object under `prefix` (of the media bucket, or `bucket`), with its bytes."""
        s3, bucket = self.client(), bucket or self.bucket
        found = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                found[item["Key"]] = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
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
