"""`mediaStorage: spaces`: Synapse's media and a copy of each backup in a Spaces bucket, as recorded
under mocks.

Off (the default) the graph is the local-media one and the other media settings are ignored; on, a
private bucket that `pulumi destroy` keeps, a key granted that bucket alone, Synapse's storage
provider pointed at it, and the bucket's key only in root- or Synapse-readable files.
"""

from __future__ import annotations

from typing import Any

import pulumi_digitalocean as do
import pytest
import yaml

from components import paths
from components.cloud.media_bucket import BACKUP_PREFIX, MEDIA_PREFIX
from components.services import media
from components.settings import SettingsError, load
from tests.harness import Recording, SpacesAnswers, changed_steps, parse_bundle, record, unwrap
from tests.unit.test_managed_database import RAW_CONFIG, resources, step_files

ANSWERS = SpacesAnswers()
SPACES_TYPES = {"digitalocean:index/spacesBucket:SpacesBucket", "digitalocean:index/spacesKey:SpacesKey"}


@pytest.fixture(scope="module")
def spaces() -> Recording:
    return record({"mediaStorage": "spaces"})


def test_off_by_default_and_its_settings_are_ignored_while_off(graph: Recording) -> None:
    assert not {r.type for r in graph.registrations} & SPACES_TYPES
    assert "media-offload" not in {c.name for c in graph.commands()}
    tuned = record({"mediaCacheDays": 3, "spacesRegion": "ams3", "mediaBucket": "another-bucket"})
    assert resources(tuned) == resources(graph)
    assert changed_steps(graph, tuned) == set()


@pytest.mark.parametrize(("config", "key"), [
    ({"mediaStorage": "s3"}, "mediaStorage"),
    ({"mediaCacheDays": "0"}, "mediaCacheDays"),
    ({"spacesRegion": "nyc1"}, "spacesRegion"),
    ({"mediaBucket": "Media_Bucket"}, "mediaBucket"),
    ({"mediaBucket": "ab"}, "mediaBucket"),
    ({"mediaStorage": "spaces", "region": "nyc1"}, "spacesRegion"),  # the droplet's region has no Spaces
])
def test_bad_values_are_one_line_errors_naming_the_setting(config: dict[str, str], key: str) -> None:
    with pytest.raises(SettingsError) as error:
        load({**RAW_CONFIG, **config}, "test")
    message = str(error.value)
    assert "\n" not in message and f"matrix-stack:{key}" in message


def test_without_the_providers_spaces_key_nothing_is_created(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("SPACES_ACCESS_KEY_ID", "SPACES_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(variable, raising=False)
    recording = Recording()
    with pytest.raises(Exception) as error:
        record({"mediaStorage": "spaces"}, spaces_credentials=False, into=recording)
    message = str(error.value)
    assert "matrix-stack:mediaStorage=spaces" in message and "digitalocean:spacesAccessId" in message
    assert not [r for r in recording.registrations if r.type != "pulumi:pulumi:Stack"]
    # Given as environment instead, as the provider also reads it.
    monkeypatch.setenv("SPACES_ACCESS_KEY_ID", "DO00ENVKEY")
    monkeypatch.setenv("SPACES_SECRET_ACCESS_KEY", "env-secret")
    assert record({"mediaStorage": "spaces"}, spaces_credentials=False).of_type("digitalocean:index/spacesBucket:SpacesBucket")
    # Local media need no Spaces key.
    assert record({}, spaces_credentials=False).commands()


def buckets(recording: Recording) -> dict[str, Any]:
    return {r.name: r for r in recording.of_type("digitalocean:index/spacesBucket:SpacesBucket")}


def keys_of(recording: Recording) -> dict[str, Any]:
    return {r.name: r for r in recording.of_type("digitalocean:index/spacesKey:SpacesKey")}


def test_the_bucket_is_private_and_outlives_the_stack(spaces: Recording) -> None:
    bucket = buckets(spaces)["media-bucket"]
    inputs = bucket.inputs
    assert (inputs["name"], inputs["region"], inputs["acl"]) == ("matrix-example-org", "nyc3", "private")
    # Pulumi's retainOnDelete: `pulumi destroy` and mediaStorage back to local leave the bucket (the
    # users' files) in the account; protect would make `pulumi destroy` fail instead.
    assert bucket.retain_on_delete and not bucket.protect and not inputs.get("forceDestroy")
    # Backups in the bucket expire like those on the volume; media never do.
    (rule,) = inputs["lifecycleRules"]
    assert rule == {"enabled": True, "prefix": BACKUP_PREFIX, "expiration": {"days": 7}}
    elsewhere = buckets(record({"mediaStorage": "spaces", "region": "nyc1", "spacesRegion": "ams3",
                                "mediaBucket": "our-media", "backupKeepDays": "30"}))["media-bucket"]
    assert (elsewhere.inputs["name"], elsewhere.inputs["region"]) == ("our-media", "ams3")
    assert elsewhere.inputs["lifecycleRules"][0]["expiration"] == {"days": 30}


def test_the_key_reaches_this_bucket_alone_and_its_secret_stays_secret(spaces: Recording) -> None:
    bucket = buckets(spaces)["media-bucket"]
    key = keys_of(spaces)["media-key"]
    assert key.inputs["grants"] == [{"bucket": bucket.inputs["name"], "permission": "readwrite"}]
    assert bucket.urn in key.dependencies  # a grant names an existing bucket
    assert "secretKey" in key.additional_secret_outputs and not key.retain_on_delete


def test_the_backups_have_their_own_versioned_bucket_and_key(spaces: Recording) -> None:
    """Issue 26: a Spaces key's grant is a whole bucket, so Synapse's key (in homeserver.yaml) must not be
    the backups' key: the backups get a bucket and a key of their own; deleted or overwritten backups stay
    as noncurrent versions for backupKeepDays; the encryption key is generated, secret, and exported."""
    backups, media_bucket = buckets(spaces)["media-backups"], buckets(spaces)["media-bucket"]
    assert backups.inputs["name"] == "matrix-example-org-backups" != media_bucket.inputs["name"]
    assert backups.inputs["acl"] == "private" and backups.retain_on_delete and not backups.inputs.get("forceDestroy")
    assert backups.inputs["versioning"] == {"enabled": True}
    (rule,) = backups.inputs["lifecycleRules"]
    assert rule == {"enabled": True, "prefix": BACKUP_PREFIX, "expiration": {"days": 7},
                    "noncurrentVersionExpiration": {"days": 7}}
    key = keys_of(spaces)["media-backup-key"]
    assert key.inputs["grants"] == [{"bucket": backups.inputs["name"], "permission": "readwrite"}]
    assert "secretKey" in key.additional_secret_outputs
    assert keys_of(spaces)["media-key"].inputs["grants"][0]["bucket"] == media_bucket.inputs["name"]
    encryption = spaces.named("media-backup-encryption-key")
    assert encryption.type == "random:index/randomBytes:RandomBytes" and encryption.inputs["length"] == 32
    assert spaces.stack_outputs["backupEncryptionKey"][1] is True  # exported, as a secret
    named = record({"mediaStorage": "spaces", "backupBucket": "our-backups", "backupKeepDays": "30"})
    assert buckets(named)["media-backups"].inputs["name"] == "our-backups"
    assert buckets(named)["media-backups"].inputs["lifecycleRules"][0]["noncurrentVersionExpiration"] == {"days": 30}


def test_synapse_never_gets_the_backups_key_or_their_encryption_key(spaces: Recording) -> None:
    backup_secret = ANSWERS.backup_secret_key
    encryption = str(unwrap(spaces.named("media-backup-encryption-key").raw_outputs["base64"]))
    placed = {}
    for command in spaces.commands():
        files, _ = parse_bundle(str(unwrap(command.raw_inputs["stdin"])))
        for f in files:
            if backup_secret in f.content or encryption in f.content:
                placed[f.path] = (f.mode, f.owner, f.group)
    assert placed == {paths.SPACES_BACKUP_ENV: ("0600", "root", "root"),
                      paths.BACKUP_ENCRYPTION_KEY: ("0600", "root", "root")}


def test_synapse_stores_media_in_the_bucket(spaces: Recording) -> None:
    files = step_files(spaces, "synapse-config")
    homeserver = yaml.safe_load(files[paths.SYNAPSE_CONFIG].content)
    (provider,) = homeserver["media_storage_providers"]
    assert provider["module"] == "s3_storage_provider.S3StorageProviderBackend"
    # Written to the bucket before the upload is answered: the local store is only a cache.
    assert (provider["store_local"], provider["store_remote"], provider["store_synchronous"]) == (True, True, True)
    assert provider["config"] == {
        "bucket": "matrix-example-org", "region_name": "nyc3", "endpoint_url": "https://nyc3.digitaloceanspaces.com",
        "access_key_id": ANSWERS.access_key, "secret_access_key": ANSWERS.secret_key, "prefix": MEDIA_PREFIX}
    unit = files["/etc/systemd/system/matrix-synapse.service"].content
    assert f"Environment=AWS_CA_BUNDLE={media.CA_BUNDLE}" in unit.splitlines()
    install = next(c for c in spaces.commands() if c.name == "synapse-install")
    lock = step_files(spaces, "synapse-install")["/opt/synapse/requirements.lock"].content
    assert "synapse-s3-storage-provider==" in lock and "--no-deps" in str(unwrap(install.raw_inputs["stdin"]))


def test_the_key_is_only_in_files_for_root_or_synapse(spaces: Recording) -> None:
    readable_by = {paths.SPACES_ENV: ("0600", "root", "root"), paths.SYNAPSE_CONFIG: ("0640", "root", "matrix-synapse")}
    assert ANSWERS.secret_key != ANSWERS.backup_secret_key
    seen = set()
    for command in spaces.commands():
        files, _ = parse_bundle(str(unwrap(command.raw_inputs["stdin"])))
        holding = [f for f in files if ANSWERS.secret_key in f.content]
        for placed in holding:
            assert (placed.mode, placed.owner, placed.group) == readable_by[placed.path], (command.name, placed.path)
            seen.add(placed.path)
        if holding:
            assert command.is_secret("stdin"), command.name
        assert ANSWERS.secret_key not in str(unwrap(command.raw_inputs["create"]))
    assert seen == set(readable_by)


def test_switching_on_runs_only_the_media_steps_and_back_converges(graph: Recording, spaces: Recording) -> None:
    # Synapse gets the provider (its lock) and its config; the backups get the copy to the bucket; the
    # media step comes; the self-check re-runs as after every change; the checks between deploys watch the
    # offload timer too.
    assert changed_steps(graph, spaces) == {"synapse-install", "synapse-config", "backup-schedule", "media-offload",
                                            "selfcheck-verify", "health-schedule"}
    back = record({"mediaStorage": "local"})
    assert changed_steps(graph, back) == set()
    assert resources(back) == resources(graph)


def test_a_new_cache_age_changes_only_the_env_file(spaces: Recording) -> None:
    shorter = record({"mediaStorage": "spaces", "mediaCacheDays": "3"})
    assert changed_steps(spaces, shorter) == {"backup-schedule", "selfcheck-verify"}
    env = step_files(shorter, "backup-schedule")[paths.SPACES_ENV].content
    assert "MATRIX_STACK_CACHE_DAYS=3" in env.splitlines()


def test_mocks_answer_like_the_provider() -> None:
    """The harness answers with the provider's output names (a renamed output would read as None)."""
    assert {"endpoint", "bucket_domain_name"} <= set(dir(do.SpacesBucket))
    assert {"access_key", "secret_key"} <= set(dir(do.SpacesKey))
