"""Weekly database upkeep: systemd accepts the service and timer and the schedule is weekly and
caught up after downtime; what the command does runs on the end-to-end host
(tests/e2e/test_deployment.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from components import paths
from components.remote import RemoteFile
from components.services import maintenance
from tests.templates.conftest import make_context, parse_unit, verify_timer_units


def files() -> dict[str, RemoteFile]:
    (spec,) = maintenance.steps(make_context())
    return {f.path: f for f in spec.files}


def test_service_and_timer_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    postgres_unit = make_context().settings.platform.postgres_unit
    verify_timer_units(tmp_path, files(), maintenance.COMMAND, maintenance.SERVICE, maintenance.TIMER, postgres_unit)


def test_the_timer_runs_weekly_after_the_nights_backup_and_catches_up() -> None:
    timer = parse_unit(str(files()[maintenance.TIMER_PATH].content))
    calendar = subprocess.run(["systemd-analyze", "calendar", timer["Timer"]["OnCalendar"]], capture_output=True, text=True)
    assert calendar.returncode == 0, calendar.stderr
    assert "Normalized form: Sun *-*-* 04:30:00" in calendar.stdout
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_the_service_waits_for_postgres_and_the_volume() -> None:
    rendered = files()
    service = parse_unit(str(rendered[maintenance.SERVICE_PATH].content))
    assert service["Unit"]["After"] == make_context().settings.platform.postgres_unit
    assert service["Unit"]["RequiresMountsFor"] == paths.DATA_MOUNT
    assert (service["Service"]["Type"], service["Service"]["ExecStart"]) == ("oneshot", maintenance.COMMAND)
    command = rendered[maintenance.COMMAND]
    assert (command.mode, command.owner, command.group) == ("0755", "root", "root")
