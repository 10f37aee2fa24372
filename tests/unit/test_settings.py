"""Every config rule refuses bad input with one line naming the key, before any resource exists."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from components.settings import DEFAULTS, REQUIRED, SettingsError, load, memory_mb_of, tuning_for
from tests.harness import DEFAULT_CONFIG, Recording, config_strings, record, registered_resources

ROOT = Path(__file__).resolve().parents[2]


def raw(**overrides: Any) -> dict[str, str]:
    merged = {**DEFAULT_CONFIG, **overrides}
    return {k.split(":", 1)[1]: v for k, v in config_strings(merged).items()}


INVALID: list[tuple[str, Any]] = [
    ("domain", "Example.com"),
    ("domain", "https://example.com"),
    ("domain", "example.com."),
    ("domain", "localhost"),
    ("domain", "-bad.example.com"),
    ("sshAllowedCidrs", []),
    ("sshAllowedCidrs", ["203.0.113.7"]),
    ("sshAllowedCidrs", ["203.0.113.7/24"]),
    ("sshAllowedCidrs", ["not-a-cidr/32"]),
    ("sshAllowedCidrs", "203.0.113.7"),  # no prefix length (one string is read as comma-separated CIDRs)
    ("letsencryptEmail", "ops@"),
    ("letsencryptEmail", "ops example.com"),
    ("certbotCloudflareToken", "short"),
    ("certbotCloudflareToken", "has space in the token value ok"),
    ("region", "NYC3"),
    ("dropletSize", "s_1vcpu_1gb"),
    ("dropletSize", "s-1vcpu"),
    ("dropletImage", "ubuntu-24-04-x64"),
    ("dropletImage", "debian-11-x64"),
    ("dropletImage", "debian-14-x64"),
    ("volumeSizeGb", 0),
    ("volumeSizeGb", "ten"),
    ("matrixSubdomain", "mat.rix"),
    ("chatSubdomain", "Chat"),
    ("turnSubdomain", "-turn"),
    ("turnSubdomain", "matrix"),
    ("acmeServer", "ftp://acme.example.com/dir"),
    ("acmeServer", "https://acme-staging-v02.api.letsencrypt.org/directory"),
    ("cloudflareZone", "example.net"),
    ("cloudflareZone", "ple.org"),
    ("cloudflareZone", "Example.org"),
    ("outboundIpAllowlist", ["10.8.0.1"]),
    ("outboundIpAllowlist", "10.8.0.1/24"),  # host bits set
    ("synapseVersion", "v1.163.2"),
    ("synapseVersion", "latest"),
    ("elementVersion", "1.11"),
    ("elementSha256", "ABC"),
    ("elementSha256", "z" * 64),
    ("elementDownloadUrl", "https://mirror.example.com/element.tar.gz"),
    ("elementDownloadUrl", "https://mirror.example.com/{version}/a b.tgz"),
    ("elementSigningKey", "not a key block"),
    ("elementSigningKey", "-----BEGIN PGP PRIVATE KEY BLOCK-----\nxyz\n-----END PGP PRIVATE KEY BLOCK-----"),
    ("elementSigningFingerprint", "712B FBEE 92DC"),
    ("elementSigningFingerprint", "Z" * 40),
    ("maxUploadSizeMb", 0),
    ("maxUploadSizeMb", 101),
    ("maxUploadSizeMb", True),
    ("enableRegistration", "yes"),
    ("federation", "closed"),
    ("federationAllowlist", ["matrix.org"]),  # set while federation is open
    ("turnRelayPorts", "1000-2000"),
    ("turnRelayPorts", "49251-49152"),
    ("turnRelayPorts", "49152-65535"),
    ("turnRelayPorts", "49152"),
    ("adminUser", "Admin"),
    ("adminUser", "admin user"),
    ("sshPublicKeys", ["not a key"]),
    ("enableUrlPreviews", "on"),
    ("enableJemalloc", 1),
    ("backupKeepDays", 0),
    ("backupKeepDays", 366),
    ("backupKeepDays", "a week"),
    ("localMediaRetentionDays", -1),
    ("localMediaRetentionDays", "90d"),
    ("remoteMediaRetentionDays", 3651),
    ("remoteRoomMaxStateEvents", 1.5),
    ("remoteRoomMaxStateEvents", -500),
    ("staleDeviceDays", True),
    ("adoptVolume", "Matrix-Data"),
    ("adoptVolume", "1-data"),
    ("adoptVolume", "a" * 65),
    # Issue 26: what would let Synapse past its own blocklist to this droplet or the metadata service.
    ("outboundIpAllowlist", ["0.0.0.0/0"]),
    ("outboundIpAllowlist", ["::/0"]),
    ("outboundIpAllowlist", ["0.0.0.0/1"]),  # holds 127.0.0.0/8
    ("outboundIpAllowlist", ["127.0.0.0/8"]),
    ("outboundIpAllowlist", ["127.0.0.1/32"]),
    ("outboundIpAllowlist", ["169.254.169.254/32"]),
    ("outboundIpAllowlist", ["169.254.0.0/16"]),
    ("outboundIpAllowlist", ["::1/128"]),
    ("outboundIpAllowlist", ["fe80::/64"]),
    ("outboundIpAllowlist", ["::ffff:169.254.169.254/128"]),
    ("outboundIpAllowlist", ["::ffff:127.0.0.1/128"]),
    ("outboundIpAllowlist", ["10.8.0.0/24", "127.0.0.0/8"]),
    # Fetched by the droplet: over TLS it verifies, never plain HTTP.
    ("acmeServer", "http://acme.example.com/directory"),
    ("elementDownloadUrl", "http://mirror.example.com/element-v{version}.tar.gz"),
    ("elementDownloadUrl", "https:///element-v{version}.tar.gz"),
    ("automaticRebootTime", "4:00"),
    ("automaticRebootTime", "24:00"),
    ("automaticRebootTime", "04:60"),
    ("automaticRebootTime", "now"),
    ("backupBucket", "Backups"),
]


@pytest.mark.parametrize(("key", "value"), INVALID, ids=[f"{k}={v!r}"[:60] for k, v in INVALID])
def test_invalid_value_is_refused_with_one_line_naming_the_key(key: str, value: Any) -> None:
    with pytest.raises(SettingsError) as error:
        load(raw(**{key: value}))
    message = str(error.value)
    assert "\n" not in message
    assert f"matrix-stack:{key}" in message or (key == "turnSubdomain" and "Subdomain" in message)
    assert "fix:" in message


KEY_BLOCK = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBGCALb4=\n-----END PGP PUBLIC KEY BLOCK-----"


@pytest.mark.parametrize(
    ("given", "missing"),
    [({"elementSigningKey": KEY_BLOCK}, "elementSigningFingerprint"),
     ({"elementSigningFingerprint": "A" * 40}, "elementSigningKey")],
)
def test_a_mirror_signing_key_needs_its_fingerprint_and_back(given: dict[str, str], missing: str) -> None:
    with pytest.raises(SettingsError) as error:
        load(raw(**given))
    assert f"matrix-stack:{missing}" in str(error.value) and "\n" not in str(error.value)


def test_a_mirror_signing_key_is_accepted_with_a_normalised_fingerprint() -> None:
    spaced = "712b fbee 92dc a452 52db  17d7 c7be 97ef a179 b100"
    settings, _ = load(raw(elementSigningKey=KEY_BLOCK, elementSigningFingerprint=spaced))
    assert settings.element_signing_fingerprint == "712BFBEE92DCA45252DB17D7C7BE97EFA179B100"
    assert settings.element_signing_key == KEY_BLOCK + "\n"


def test_other_networks_may_be_allowed_outbound() -> None:
    settings, _ = load(raw(outboundIpAllowlist=["10.8.0.0/24", "198.18.3.0/30", "2001:db8:5::/48"]))
    assert settings.outbound_ip_allowlist == ("10.8.0.0/24", "198.18.3.0/30", "2001:db8:5::/48")


def test_the_backups_bucket_is_never_the_media_bucket() -> None:
    spaces = {"mediaStorage": "spaces", "mediaBucket": "our-media"}
    settings, _ = load(raw(**spaces))
    assert settings.spaces_backup_bucket_name == "our-media-backups"
    long_name = "m" * 63
    assert load(raw(mediaStorage="spaces", mediaBucket=long_name))[0].spaces_backup_bucket_name == "m" * 55 + "-backups"
    with pytest.raises(SettingsError) as error:
        load(raw(**spaces, backupBucket="our-media"))
    assert "matrix-stack:backupBucket" in str(error.value) and "\n" not in str(error.value)


def test_open_ssh_and_no_reboot_window_are_warned_about() -> None:
    from components.settings import warnings

    quiet, _ = load(raw(automaticRebootTime="04:00"))
    assert warnings(quiet) == []
    loud, _ = load(raw(sshAllowedCidrs=["0.0.0.0/0", "::/0"]))
    said = warnings(loud)
    assert len(said) == 2
    assert said[0].startswith("sshAllowedCidrs: 0.0.0.0/0, ::/0 lets the whole internet") and "\n" not in said[0]
    assert said[1].startswith("automaticRebootTime is not set")


def test_element_signature_sits_next_to_the_tarball() -> None:
    settings, _ = load(raw(elementDownloadUrl="https://mirror.example.com/e/{version}/element-v{version}.tar.gz"))
    assert settings.element_signature_url == f"https://mirror.example.com/e/{settings.element_version}/element-v{settings.element_version}.tar.gz.asc"
    assert settings.element_sha256 == "" and settings.element_signing_key == ""


def test_allowlist_mode_needs_a_list() -> None:
    with pytest.raises(SettingsError, match="federationAllowlist"):
        load(raw(federation="allowlist"))


@pytest.mark.parametrize("key", REQUIRED)
def test_missing_required_key_is_refused(key: str) -> None:
    values = raw()
    del values[key]
    with pytest.raises(SettingsError, match=f"matrix-stack:{key} is required"):
        load(values)


def test_unknown_key_is_refused_so_typos_do_not_pass_silently() -> None:
    with pytest.raises(SettingsError, match="maxUploadSizeMB is not a known setting"):
        load({**raw(), "maxUploadSizeMB": "20"})


def test_secret_value_is_never_echoed_in_the_error() -> None:
    with pytest.raises(SettingsError) as error:
        load(raw(certbotCloudflareToken="tooShortSecretX"))
    assert "tooShortSecretX" not in str(error.value)


def test_valid_values_are_accepted_and_normalised() -> None:
    settings, config_secrets = load(
        raw(
            federation="allowlist",
            federationAllowlist=["matrix.org", "example.net"],
            turnRelayPorts="50000-50099",
            sshAllowedCidrs=["2001:db8::/48", "198.51.100.0/24"],
            sshPublicKeys=["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample me@laptop"],
            maxUploadSizeMb=100,
            dropletSize="s-2vcpu-4gb",
        )
    )
    assert settings.turn_relay_ports == (50000, 50099)
    assert settings.federation_allowlist == ("matrix.org", "example.net")
    assert settings.hostnames == ("example.org", "matrix.example.org", "chat.example.org", "turn.example.org")
    assert settings.tuning.memory_mb == 4096
    assert config_secrets.certbot_cloudflare_token == DEFAULT_CONFIG["certbotCloudflareToken"]


@pytest.mark.parametrize(("image", "python", "postgres"), [("debian-13-x64", "3.13", "17"), ("debian-12-x64", "3.11", "15")])
def test_both_debian_images_are_accepted_each_with_its_python_and_postgresql(image: str, python: str, postgres: str) -> None:
    settings = load(raw(dropletImage=image))[0]
    assert (settings.platform.python, settings.platform.postgres_major) == (python, postgres)


def test_debian_13_is_the_default_image() -> None:
    assert load(raw())[0].droplet_image == "debian-13-x64"


def test_defaults_apply_when_unset() -> None:
    settings, _ = load(raw())
    assert settings.region == DEFAULTS["region"]
    assert settings.max_upload_size_mb == DEFAULTS["maxUploadSizeMb"]
    assert settings.relay_port_range == DEFAULTS["turnRelayPorts"]
    assert settings.element_tarball_url.endswith(f"element-v{DEFAULTS['elementVersion']}.tar.gz")


@pytest.mark.parametrize(
    ("slug", "memory"), [("s-1vcpu-1gb", 1024), ("s-1vcpu-512mb-10gb", 512), ("s-4vcpu-8gb", 8192), ("g-2vcpu-8gb", 8192)]
)
def test_memory_is_read_from_the_size_slug(slug: str, memory: int) -> None:
    assert memory_mb_of(slug) == memory


def test_tuning_grows_with_memory_and_turns_presence_on_from_2gb() -> None:
    small, large = tuning_for(1024), tuning_for(8192)
    assert small.pg_shared_buffers_mb < large.pg_shared_buffers_mb
    assert small.synapse_cache_max_mb < large.synapse_cache_max_mb
    assert not small.presence_enabled and large.presence_enabled


def test_dev_stack_example_is_valid() -> None:
    stack = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    values = {
        k.split(":", 1)[1]: v if isinstance(v, str) else __import__("json").dumps(v)
        for k, v in stack.items()
        if k.startswith("matrix-stack:") and not isinstance(v, dict)
    }
    values.setdefault("certbotCloudflareToken", "placeholder-token-0123456789")
    settings, _ = load(values, stack="dev")
    assert settings.cloudflare_zone == "example.com" and settings.domain.endswith(".example.com")


@pytest.mark.parametrize(("key", "value"), [("maxUploadSizeMb", 500), ("domain", "EXAMPLE"), ("federation", "x")])
def test_program_registers_nothing_when_config_is_invalid(key: str, value: Any) -> None:
    recording = Recording()
    with pytest.raises(SettingsError, match=key):
        record({key: value}, into=recording)
    assert registered_resources(recording) == []


def test_program_refuses_a_token_stored_in_plain_text() -> None:
    recording = Recording()
    with pytest.raises(SettingsError, match="must be a secret"):
        record(plain_keys=("certbotCloudflareToken",), into=recording)
    assert registered_resources(recording) == []
