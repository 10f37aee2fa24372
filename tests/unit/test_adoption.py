"""Adopting a kept volume (adoptVolume): looked up before any resource, refused with one line when it
cannot be taken safely, imported (never created) at its own size, and every secret-carrying step re-run
with the new stack's secrets."""

from __future__ import annotations

from typing import Any

import pytest

from components import paths
from components.cloud.adoption import volume_description
from components.settings import SettingsError
from tests.harness import CloudMocks, Recording, changed_steps, parse_bundle, record, registered_resources

VOLUME = "digitalocean:index/volume:Volume"
KEPT = "matrix-old-example-org-data"
OUR_DROPLET = "matrix-test-example-org"  # the default config's resource prefix (stack "test")


def kept(size: int = 10, filesystem: str = "xfs", attached: tuple[int, ...] = (), region: str = "nyc3",
         domain: str = "example.org") -> dict[str, Any]:
    return {KEPT: {"id": "0c8a2d5e-kept", "size": size, "filesystemType": filesystem, "dropletIds": list(attached),
                   "region": region, "description": volume_description(domain)}}


def adopt(config: dict[str, Any] | None = None, seed: str = "a later stack life", **volume: Any) -> Recording:
    mocks = CloudMocks(volumes=kept(**volume), droplet_names={101: OUR_DROPLET, 202: "matrix-prod-example-org"},
                       secret_seed=seed)
    return record({"adoptVolume": KEPT, **(config or {})}, mocks=mocks)


def test_a_kept_volume_is_imported_not_created_and_keeps_its_name_and_protection() -> None:
    recording = adopt()
    (volume,) = recording.of_type(VOLUME)
    assert volume.import_id == "0c8a2d5e-kept"
    assert volume.inputs["name"] == KEPT and volume.inputs["size"] == 10
    assert volume.retain_on_delete and not volume.protect
    # ignored inputs are copied from the volume on import, so its own name/description never differ
    assert {"name", "description", "region", "initialFilesystemType"} <= set(volume.ignore_changes)
    (attachment,) = recording.of_type("digitalocean:index/volumeAttachment:VolumeAttachment")
    assert attachment.inputs["volumeId"] == "0c8a2d5e-kept"
    lookups = [args for tok, args in recording.invokes if tok == "digitalocean:index/getVolume:getVolume"]
    assert lookups == [{"name": KEPT, "region": "nyc3"}]


def test_the_steps_mount_the_adopted_volume_by_its_own_name() -> None:
    files, _ = parse_bundle(adopt().named("volume-mount").inputs["stdin"])
    (unit,) = [f for f in files if f.path.endswith(paths.MOUNT_UNIT)]
    assert f"What=/dev/disk/by-id/scsi-0DO_Volume_{KEPT}\n" in unit.content
    assert "/dev/disk/by-id/scsi-0DO_Volume_matrix-test-example-org-data" not in unit.content


def test_without_the_setting_the_stack_creates_its_own_volume(graph: Recording) -> None:
    (volume,) = graph.of_type(VOLUME)
    assert volume.import_id == "" and volume.inputs["name"] == "matrix-test-example-org-data"
    assert not [tok for tok, _ in graph.invokes if tok == "digitalocean:index/getVolume:getVolume"]


def test_the_adopting_run_imports_the_volume_at_its_own_size_and_a_later_run_grows_it() -> None:
    """The import must match the volume (older engines fail an import with a diff); once the volume is
    attached to this stack's droplet, volumeSizeGb applies as on any stack."""
    adopting = adopt({"volumeSizeGb": 20}, size=10)
    assert adopting.of_type(VOLUME)[0].inputs["size"] == 10
    later = adopt({"volumeSizeGb": 20}, size=10, attached=(101,))
    assert later.of_type(VOLUME)[0].inputs["size"] == 20
    assert later.of_type(VOLUME)[0].import_id == "0c8a2d5e-kept"  # kept: same id, a no-op for the engine


@pytest.mark.parametrize(
    ("volume", "config", "key", "says"),
    [
        ({"attached": (202,)}, {}, "adoptVolume", "attached to matrix-prod-example-org"),
        ({"filesystem": "ext4"}, {}, "adoptVolume", "this one is ext4"),
        ({"size": 40}, {}, "volumeSizeGb", "at least 40"),
        ({"region": "fra1"}, {}, "adoptVolume", "no volumes found"),
        ({"domain": "example.net"}, {}, "adoptVolume", "set domain to example.net"),
    ],
    ids=["attached-elsewhere", "ext4", "smaller-setting", "other-region", "other-server"],
)
def test_a_volume_that_cannot_be_adopted_safely_is_refused_before_any_resource(
    volume: dict[str, Any], config: dict[str, Any], key: str, says: str
) -> None:
    recording = Recording()
    mocks = CloudMocks(volumes=kept(**volume), droplet_names={202: "matrix-prod-example-org"})
    with pytest.raises(SettingsError) as error:
        record({"adoptVolume": KEPT, **config}, mocks=mocks, into=recording)
    message = str(error.value)
    assert f"matrix-stack:{key}=" in message and says in message and "fix:" in message and "\n" not in message
    assert registered_resources(recording) == []


# The steps whose files carry a generated secret, and the secret each must converge to.
SECRET_STEPS = {"postgres-config", "synapse-config", "coturn-config", "nginx-sites", "admin-user"}


def test_a_new_stack_life_on_the_volume_reruns_every_secret_carrying_step() -> None:
    """New secrets (another seed: the old state is gone) change exactly the secret-carrying steps, so
    each re-runs and converges: role password, homeserver.yaml's secrets, TURN secret, origin-pull
    certificates, admin password."""
    before = adopt(seed="the destroyed stack", attached=(101,))
    after = adopt(seed="the adopting stack", attached=(101,))
    changed = changed_steps(before, after)
    assert changed >= SECRET_STEPS, sorted(SECRET_STEPS - changed)
    assert changed <= SECRET_STEPS | {"selfcheck-verify"}, sorted(changed - SECRET_STEPS)


def test_the_project_delete_outlasts_digitalocean_moving_the_kept_volume(graph: Recording) -> None:
    """Deleting the project first moves its members (the retained volume) to the default project,
    asynchronously; the provider retries meanwhile, longer than its 3-minute default."""
    (project,) = graph.of_type("digitalocean:index/project:Project")
    minutes = int(project.custom_timeouts["delete"].removesuffix("m"))
    assert minutes >= 10
