#!/usr/bin/python3
"""matrix-stack-health: the checks only the server itself can make, run between deploys by its timer.

Installed by matrix-stack (step health-schedule); run hourly by matrix-stack-health.timer and by hand
whenever you like (as root, no arguments). Its settings are in /etc/matrix-stack/health.json (0600 root).

It checks that every service and timer of the stack is active, that the certificates (the web one, coturn's,
the origin-pull client certificate Cloudflare presents) are far from their end, that the last renewal and the
last backup did not fail, that the newest backup is recent and matches its checksums, and the data volume's
use. Each problem is one line, printed here (the journal) and then told to the operator in two ways that
never show details publicly:
  - a status file nginx serves on a secret path, which DigitalOcean's uptime check reads through Cloudflare:
    it exists only while every check passes, and only for today (so a timer that stopped running is noticed
    within a day too);
  - with a mail relay (smtpHost), a mail to the alert address when the set of problems changes, again every
    day while one remains, and once when all pass again.
Exit status: 0 when every check passes, 1 when one fails.
"""

import datetime
import email.message
import email.utils
import json
import math
import os
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from typing import Any

CONFIG_FILE = "/etc/matrix-stack/health.json"
Failures = list[tuple[str, str]]  # (stable key, the line told to the operator)
BACKUP_NAME = re.compile(r"^(\d{8}T\d{6}Z)-[A-Za-z0-9._-]+$")


def log(message: str) -> None:
    print(f"matrix-stack-health: {message}", file=sys.stderr, flush=True)


def private_directory(path: str, mode: int) -> None:
    """Create `path` (root, `mode`) or check it is one only root can change: never act through a path a
    service user could have replaced."""
    if not os.path.lexists(path):
        os.mkdir(path)
        os.chmod(path, mode)  # as asked, whatever the umask
    st = os.lstat(path)
    if not os.path.isdir(path) or os.path.islink(path) or st.st_uid != 0 or st.st_mode & 0o022:
        raise SystemExit(f"matrix-stack-health: {path} is not a directory only root can change; refusing to use it")
    if st.st_mode & 0o777 != mode:
        os.chmod(path, mode)


def read_config() -> dict[str, Any]:
    st = os.lstat(CONFIG_FILE)
    if st.st_uid != 0 or st.st_mode & 0o077 or os.path.islink(CONFIG_FILE):
        raise SystemExit(f"matrix-stack-health: {CONFIG_FILE} must be a root-only file (0600)")
    with open(CONFIG_FILE, encoding="utf-8") as f:
        config: dict[str, Any] = json.load(f)
    return config


def not_after(pem: str) -> float:
    """The end of a PEM certificate's validity, as a Unix time (openssl prints it; Python has no parser)."""
    out = subprocess.run(["openssl", "x509", "-noout", "-enddate"], input=pem, capture_output=True, text=True,
                         check=False)
    if out.returncode != 0 or not out.stdout.startswith("notAfter="):
        raise ValueError("not a certificate")
    return ssl.cert_time_to_seconds(out.stdout.strip().split("=", 1)[1])


def served_certificate(address: str, port: int, name: str) -> str:
    """The certificate a TLS server presents for `name` (not verified: its dates are what is checked)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((address, port), timeout=15) as sock:
        with context.wrap_socket(sock, server_hostname=name) as tls:
            der = tls.getpeercert(binary_form=True)
            if der is None:
                raise ValueError("no certificate")
            return ssl.DER_cert_to_PEM_cert(der)


def days_left(end: float) -> float:
    return (end - time.time()) / 86400


def check_certificates(config: dict[str, Any], failures: Failures) -> None:
    for cert in config["certificates"]:
        try:
            with open(cert["file"], encoding="ascii") as f:
                end = not_after(f.read())
        except (OSError, ValueError) as e:
            failures.append((f"cert:{cert['key']}", f"{cert['what']}: {cert['file']} cannot be read ({e}): {cert['fix']}"))
            continue
        left = days_left(end)
        if left < cert["margin_days"]:
            when = "has expired" if left < 0 else f"expires in {math.floor(left)} days"
            failures.append((f"cert:{cert['key']}", f"{cert['what']} {when}: {cert['fix']}"))
    reported = {key for key, _ in failures}
    for endpoint in config["tls_endpoints"]:
        if f"unit:{endpoint.get('unit')}" in reported:
            continue  # its service is down here, already said
        where = f"{endpoint['address']}:{endpoint['port']}"
        try:
            end = not_after(served_certificate(endpoint["address"], endpoint["port"], endpoint["name"]))
        except (OSError, ValueError) as e:
            failures.append((f"tls:{endpoint['key']}", f"{endpoint['what']}: nothing answers TLS on {where} "
                                                       f"for {endpoint['name']} ({e}): {endpoint['fix_down']}"))
            continue
        left = days_left(end)
        if left < endpoint["margin_days"]:
            when = "has expired" if left < 0 else f"expires in {math.floor(left)} days"
            failures.append((f"tls:{endpoint['key']}", f"{endpoint['what']} served on {where} {when}: "
                                                       f"{endpoint['fix']}"))


def unit_property(unit: str, name: str) -> str:
    out = subprocess.run(["systemctl", "show", "-P", name, unit], capture_output=True, text=True, check=False)
    return out.stdout.strip()


def check_units(config: dict[str, Any], failures: Failures) -> None:
    for unit in config["units"]:
        state = unit_property(unit, "ActiveState")
        if state != "active":
            failures.append((f"unit:{unit}", f"{unit} is {state or 'unknown'}, not active: "
                                             f"systemctl status {unit}; journalctl -u {unit}"))
    for unit, what in config["last_runs"].items():
        if unit_property(unit, "Result") not in ("success", ""):
            failures.append((f"run:{unit}", f"the last {what} failed: journalctl -u {unit}"))


def check_volume(config: dict[str, Any], failures: Failures) -> None:
    mount = config["data_mount"]
    if not os.path.ismount(mount):
        failures.append(("volume", f"the data volume is not mounted at {mount}: the database and media are not "
                                   f"there; `pulumi up` mounts it (volume-mount)"))
        return
    st = os.statvfs(mount)
    used = st.f_blocks - st.f_bfree
    percent = math.ceil(used * 100 / (used + st.f_bavail)) if used + st.f_bavail else 100
    if percent >= config["disk_percent"]:
        failures.append(("disk", f"the data volume {mount} is {percent} % full (alert at {config['disk_percent']} %): "
                                 f"{config['disk_fix']}"))


def newest_backup(backup_dir: str) -> tuple[str, float] | None:
    """(name, age in hours) of the newest complete backup, by the UTC time in its name, or None."""
    try:
        names = [n for n in os.listdir(backup_dir) if BACKUP_NAME.match(n)
                 and os.path.isdir(os.path.join(backup_dir, n)) and not os.path.islink(os.path.join(backup_dir, n))]
    except FileNotFoundError:
        return None
    if not names:
        return None
    name = max(names)
    match = BACKUP_NAME.match(name)
    assert match is not None
    taken = datetime.datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
    return name, (time.time() - taken.timestamp()) / 3600


def verify_backup(path: str) -> str | None:
    """Why the backup at `path` cannot be restored, or None: its files match SHA256SUMS and the dump's table
    of contents reads."""
    sums = subprocess.run(["sha256sum", "--check", "--strict", "--quiet", "SHA256SUMS"], cwd=path,
                          capture_output=True, text=True, check=False)
    if sums.returncode != 0:
        return "its files do not match its SHA256SUMS"
    dump = os.path.join(path, "synapse.dump")
    if shutil.which("pg_restore") and os.path.exists(dump):
        listed = subprocess.run(["pg_restore", "--list", dump], capture_output=True, check=False)
        if listed.returncode != 0:
            return "pg_restore cannot read its synapse.dump"
    return None


def check_backups(config: dict[str, Any], state: dict[str, Any], failures: Failures) -> None:
    backup_dir, max_age = config["backup_dir"], config["backup_max_age_hours"]
    newest = newest_backup(backup_dir)
    if newest is None:
        running_since = (time.time() - state["first_run"]) / 3600
        if state.get("backup_seen") or running_since >= max_age:
            failures.append(("backup:none", f"there is no backup in {backup_dir}: {config['backup_fix']}"))
        return
    state["backup_seen"] = True
    name, age = newest
    if age > max_age:
        failures.append(("backup:old", f"the newest backup ({name}) is {math.floor(age)} hours old: "
                                       f"{config['backup_fix']}"))
    if state.get("verified_backup") == name:
        return  # checked once: a backup is never written again
    problem = verify_backup(os.path.join(backup_dir, name))
    if problem:
        failures.append(("backup:broken", f"the newest backup ({name}) cannot be trusted: {problem}; "
                                          f"take a new one: {config['backup_command']}"))
    else:
        state["verified_backup"] = name


def publish_status(config: dict[str, Any], healthy: bool) -> None:
    """The files nginx serves on the secret path: ok-<day> for today and the next run's day, or none."""
    directory = config["status_dir"]
    private_directory(directory, 0o755)
    now = time.time()
    wanted = {f"ok-{time.strftime('%Y-%m-%d', time.localtime(t))}" for t in (now, now + 5400)} if healthy else set()
    for name in os.listdir(directory):
        if name.startswith("ok-") and name not in wanted:
            os.unlink(os.path.join(directory, name))
    for name in wanted:
        path = os.path.join(directory, name)
        if not os.path.lexists(path):
            with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644), "w") as f:
                os.fchmod(f.fileno(), 0o644)  # nginx's workers read it
                f.write("ok\n")


def load_state(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            state: dict[str, Any] = json.load(f)
        return state
    except FileNotFoundError:
        return {"first_run": time.time(), "problems": {}, "mailed": {}, "mailed_at": 0}


def save_state(path: str, state: dict[str, Any]) -> None:
    temporary = path + ".new"
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600), "w") as f:
        json.dump(state, f, indent=1)
    os.replace(temporary, path)


def mail_due(state: dict[str, Any], problems: dict[str, str], remind_hours: float) -> bool:
    """Mail when the set of problems changed since the last mail, or daily while one remains."""
    if set(problems) != set(state.get("mailed", {})):
        return True
    return bool(problems) and time.time() - state.get("mailed_at", 0) >= remind_hours * 3600


def send_mail(mail: dict[str, Any], server: str, problems: dict[str, str]) -> None:
    message = email.message.EmailMessage()
    message["From"] = mail["from"]
    message["To"] = mail["to"]
    message["Date"] = email.utils.formatdate(localtime=True)
    message["Message-ID"] = email.utils.make_msgid(domain=server)
    host = socket.gethostname()
    if problems:
        message["Subject"] = f"Matrix {server}: {len(problems)} problem(s) on the server"
        body = [f"The hourly checks on the Matrix server {server} ({host}) found:", ""]
        body += [f"- {line}" for line in problems.values()]
        body += ["", "The checks run again every hour; you get this mail again when the problems change, and every",
                 "day while one remains. Run them yourself: sudo matrix-stack-health"]
    else:
        message["Subject"] = f"Matrix {server}: every check passes again"
        body = [f"The hourly checks on the Matrix server {server} ({host}) pass again."]
    message.set_content("\n".join(body) + "\n")
    context = ssl.create_default_context()
    smtp: smtplib.SMTP
    if mail["tls"] == "tls":
        smtp = smtplib.SMTP_SSL(mail["host"], mail["port"], context=context, timeout=30)
    else:
        smtp = smtplib.SMTP(mail["host"], mail["port"], timeout=30)
        smtp.starttls(context=context)
    with smtp:
        if mail.get("user"):
            smtp.login(mail["user"], mail["password"])
        smtp.send_message(message)


def main() -> int:
    os.umask(0o077)
    config = read_config()
    private_directory(config["status_dir"], 0o755)
    private_directory(config["state_dir"], 0o700)
    state_file = os.path.join(config["state_dir"], "state.json")
    state = load_state(state_file)
    failures: Failures = []
    check_units(config, failures)
    check_certificates(config, failures)
    check_volume(config, failures)
    check_backups(config, state, failures)
    problems = dict(failures)
    for line in problems.values():
        log(f"FAILED: {line}")
    publish_status(config, not problems)
    state["problems"] = problems
    mail = config.get("mail")
    if mail and mail_due(state, problems, config["remind_hours"]):
        try:
            send_mail(mail, config["server"], problems)
            state["mailed"], state["mailed_at"] = problems, time.time()
            log(f"mailed {mail['to']}: {len(problems)} problem(s)")
        except (OSError, smtplib.SMTPException) as e:
            log(f"could not mail {mail['to']} through {mail['host']}:{mail['port']}: {e} (tried again next hour)")
    save_state(state_file, state)
    if problems:
        log(f"{len(problems)} problem(s)")
        return 1
    log("every check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
