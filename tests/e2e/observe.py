"""Snapshots of a test guest's state, to tell what a run of the steps really did on the server.

One SSH round trip runs a small Python program in the guest that reports, for every managed file,
its mtime, ctime, inode and hash; for every service unit systemd's own bookkeeping (invocation id,
main PID, restart count, when it last became active); nginx's master and worker PIDs (a reload
replaces the workers, a restart the master); PostgreSQL's config load time (changes on a reload) and
listen_addresses (shows whether the stack's settings in conf.d are in effect);
the length of dpkg's and apt's logs; and the Synapse version in the venv with the time its files
were installed. `differences` compares two snapshots and names every change.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from components import paths
from components.platform import Platform
from tests.e2e.testhost.rootfs import DEFAULT_PLATFORM
from tests.harness import Recording, parse_bundle


def service_units(platform: Platform = DEFAULT_PLATFORM) -> tuple[str, ...]:
    """The long-running units of a deployed server on `platform` (the default test hosts' by default)."""
    return ("matrix-synapse.service", "nginx.service", "coturn.service", platform.postgres_unit, paths.MOUNT_UNIT)


UNIT_PROPERTIES = ("InvocationID", "ExecMainPID", "MainPID", "NRestarts", "ActiveEnterTimestampMonotonic",
                   "ActiveState", "SubState")


def managed_files(recording: Recording) -> list[str]:
    """Every path a step writes from its bundle (parsed from the recorded stdin, as the server sees it)."""
    found: list[str] = []
    for command in recording.commands():
        files, _ = parse_bundle(command.inputs["stdin"])
        found += [f.path for f in files if f.path not in found]
    return found


def derived_files(domain: str, platform: Platform = DEFAULT_PLATFORM) -> list[str]:
    """Files the step scripts write themselves (not from the bundle): a re-run must not touch them either."""
    live = f"{paths.CERT_LIVE_DIR}/{domain}"
    return [
        f"{live}/cert.pem", f"{live}/fullchain.pem", f"{live}/privkey.pem",  # followed to the archive
        f"/etc/letsencrypt/renewal/{domain}.conf",
        f"{paths.COTURN_TLS_DIR}/fullchain.pem", f"{paths.COTURN_TLS_DIR}/privkey.pem",
        paths.SYNAPSE_SIGNING_KEY,
        f"{paths.ELEMENT_LINK}/config.json",
        "/etc/ufw/user.rules", "/etc/ufw/user6.rules",
        f"{platform.postgres_conf_dir}/postgresql.conf",
    ]


def derived_links() -> list[str]:
    return [f"/etc/nginx/sites-enabled/matrix-stack-{site}" for site in ("apex", "chat", "matrix")] + [
        paths.ELEMENT_LINK]


# Runs in the guest (python3 from the rootfs); reads a JSON request on stdin, prints a JSON snapshot.
GUEST_PROGRAM = r"""
import glob, hashlib, json, os, subprocess, sys

request = json.load(sys.stdin)
snap = {"files": {}, "links": {}, "units": {}}
for path in request["files"]:
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        snap["files"][path] = {"mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "inode": st.st_ino,
                               "mode": oct(st.st_mode & 0o7777), "uid": st.st_uid, "sha256": digest}
    except FileNotFoundError:
        snap["files"][path] = None
for path in request["links"]:
    try:
        st = os.lstat(path)
        snap["links"][path] = {"target": os.readlink(path), "ctime_ns": st.st_ctime_ns, "inode": st.st_ino}
    except OSError:
        snap["links"][path] = None
for unit in request["units"]:
    out = subprocess.run(["systemctl", "show", unit, "-p", ",".join(request["properties"])],
                         capture_output=True, text=True, check=True).stdout
    snap["units"][unit] = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

def children(pid):
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.split("/")[2]))
    return sorted(found)

master = int(snap["units"].get("nginx.service", {}).get("MainPID", "0") or 0)
snap["nginx_master"] = master
snap["nginx_workers"] = children(master) if master else []

def line_count(path):
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0

snap["dpkg_log_lines"] = line_count("/var/log/dpkg.log")
snap["apt_history_lines"] = line_count("/var/log/apt/history.log")

venv = request["venv"]
version = subprocess.run([venv + "/bin/python", "-c",
                          "import importlib.metadata as m; print(m.version('matrix-synapse'))"],
                         capture_output=True, text=True)
snap["synapse_version"] = version.stdout.strip() if version.returncode == 0 else None
records = sorted(glob.glob(venv + "/lib/python3*/site-packages/matrix_synapse-*.dist-info/RECORD"))
snap["synapse_record_ctime_ns"] = os.stat(records[0]).st_ctime_ns if records else None

pg = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-XAt", "-c",
                     "SELECT pg_conf_load_time(), pg_postmaster_start_time()"],
                    capture_output=True, text=True, cwd="/")
snap["postgres_times"] = pg.stdout.strip() if pg.returncode == 0 else None
pg = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-XAt", "-c", "SHOW listen_addresses"],
                    capture_output=True, text=True, cwd="/")
snap["postgres_listen_addresses"] = pg.stdout.strip() if pg.returncode == 0 else None
print(json.dumps(snap))
"""


@dataclass
class Snapshot:
    data: dict[str, Any]

    def unit(self, name: str) -> dict[str, str]:
        return dict(self.data["units"][name])

    @property
    def nginx_master(self) -> int:
        return int(self.data["nginx_master"])

    @property
    def nginx_workers(self) -> list[int]:
        return list(self.data["nginx_workers"])


def snapshot(ssh: Any, files: Iterable[str], links: Iterable[str] = (),
             units: Iterable[str] | None = None) -> Snapshot:
    """Take a snapshot through `ssh(command, stdin) -> stdout` (e.g. Deployment.ssh)."""
    request = {"files": list(files), "links": list(links), "units": list(service_units() if units is None else units),
               "properties": list(UNIT_PROPERTIES), "venv": paths.SYNAPSE_VENV}
    out = ssh(f"python3 -c {shlex.quote(GUEST_PROGRAM)}", json.dumps(request))
    return Snapshot(json.loads(out))


def differences(before: Snapshot, after: Snapshot) -> list[str]:
    """Every difference between two snapshots, one readable line each (empty: nothing changed)."""
    found = []
    for section in ("files", "links", "units"):
        old, new = before.data[section], after.data[section]
        for key in sorted(set(old) | set(new)):
            a, b = old.get(key), new.get(key)
            if a == b:
                continue
            if a is None or b is None:
                found.append(f"{section} {key}: {a!r} -> {b!r}")
                continue
            for field in sorted(set(a) | set(b)):
                if a.get(field) != b.get(field):
                    found.append(f"{section} {key} {field}: {a.get(field)!r} -> {b.get(field)!r}")
    for key in ("nginx_master", "nginx_workers", "dpkg_log_lines", "apt_history_lines", "synapse_version",
                "synapse_record_ctime_ns", "postgres_times", "postgres_listen_addresses"):
        if before.data[key] != after.data[key]:
            found.append(f"{key}: {before.data[key]!r} -> {after.data[key]!r}")
    return found
