"""Backup step: systemd accepts the service and timer, the schedule is a valid calendar event, and
the installed commands carry the settings they are rendered with (their behaviour runs on the
end-to-end host: tests/e2e/test_backup.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from components import paths
from components.remote import RemoteFile
from components.services import backup
from tests.templates.conftest import make_context, parse_unit, verify_timer_units


def files(**config: str) -> dict[str, RemoteFile]:
    (spec,) = backup.steps(make_context(**config))
    return {f.path: f for f in spec.files}


def test_service_and_timer_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    postgres_unit = make_context().settings.platform.postgres_unit
    verify_timer_units(tmp_path, files(), paths.BACKUP_COMMAND, backup.SERVICE, backup.TIMER, postgres_unit)


def test_the_timer_runs_daily_and_catches_up_after_downtime() -> None:
    timer = parse_unit(str(files()[backup.TIMER_PATH].content))
    calendar = subprocess.run(["systemd-analyze", "calendar", timer["Timer"]["OnCalendar"]], capture_output=True, text=True)
    assert calendar.returncode == 0, calendar.stderr
    assert "Normalized form: *-*-* 03:30:00" in calendar.stdout
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_the_service_waits_for_postgres_and_the_volume() -> None:
    service = parse_unit(str(files()[backup.SERVICE_PATH].content))
    assert service["Unit"]["After"] == make_context().settings.platform.postgres_unit
    assert service["Unit"]["RequiresMountsFor"] == paths.DATA_MOUNT
    assert service["Service"]["Type"] == "oneshot"
    assert service["Service"]["ExecStart"] == f"{paths.BACKUP_COMMAND} scheduled"


def test_commands_are_root_owned_executables_with_the_kept_days_setting() -> None:
    rendered = files(backupKeepDays="30")
    for path in (paths.BACKUP_COMMAND, paths.RESTORE_COMMAND):
        f = rendered[path]
        assert (f.mode, f.owner, f.group) == ("0755", "root", "root")
        assert str(f.content).startswith("#!/bin/bash\n")
    script = str(rendered[paths.BACKUP_COMMAND].content)
    assert "\nkeep_days=30\n" in script
    assert f"\nbackup_dir={paths.BACKUP_DIR}\n" in script
    restore = str(rendered[paths.RESTORE_COMMAND].content)
    assert f"\nowner={paths.POSTGRES_USER}\n" in restore and f"\ndatabase={paths.POSTGRES_DB}\n" in restore
