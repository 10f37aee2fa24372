"""The data volume's plan: create one, or adopt the kept volume `adoptVolume` names.

`pulumi destroy` keeps the data volume in the account (retain_on_delete). A new stack, or the same
stack after a destroy, takes it back with `adoptVolume`: the program looks the volume up by name in
`region` on every run, refuses one it cannot safely take (another filesystem, attached to another
droplet, bigger than `volumeSizeGb`), and imports it with Pulumi's `import` resource option.

Engine rules this relies on (Pulumi docs, resource option "import", and pulumi/pulumi
developer-docs/architecture/import.md): the first `up` reads the volume and adds it to the state;
ignored inputs (`ignore_changes`) are copied from the volume, so its own name, description and
filesystem inputs never differ; the option may stay in the program, since a resource already in the
state with that id "is treated like any other resource". Every other input must equal the volume's
actual value, or older engines fail the import ("inputs to import do not match"), hence the size rule
below: the adopting run imports the volume at its own size, later runs apply `volumeSizeGb`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_digitalocean as do

from components.settings import Settings, invalid

# What the volume step can mount: XFS (the program creates them so), or nothing yet (formatted then).
ADOPTABLE_FILESYSTEMS = ("xfs", "")
DESCRIPTION_PREFIX = "Matrix data for "


@dataclass(frozen=True)
class KeptVolume:
    """A volume in the account, as DigitalOcean describes it."""

    id: str
    name: str
    size_gb: int
    filesystem_type: str
    attached_to: tuple[str, ...]  # names of the droplets it is attached to
    description: str = ""


@dataclass(frozen=True)
class VolumePlan:
    """What the Host registers as its data volume."""

    name: str
    size_gb: int
    import_id: str | None  # None: create a new volume
    warnings: Sequence[str] = ()


def look_up(settings: Settings) -> KeptVolume | None:
    """The volume `adoptVolume` names, read from DigitalOcean (None when the stack makes its own).

    A synchronous invoke, so a missing volume stops the program before any resource is registered.
    """
    if not settings.adopt_volume:
        return None
    try:
        found = do.get_volume(name=settings.adopt_volume, region=settings.region)
    except Exception as error:  # the provider's "not found" (or an API failure) as one clear line
        said = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise invalid("adoptVolume", settings.adopt_volume,
                      f"the name of a volume in region {settings.region} of this DigitalOcean account "
                      f"(the lookup said: {said}); see `doctl compute volume list`") from None
    attached = tuple(do.get_droplet(id=int(droplet_id)).name for droplet_id in found.droplet_ids)
    return KeptVolume(id=found.id, name=found.name, size_gb=int(found.size),
                      filesystem_type=found.filesystem_type or "", attached_to=attached,
                      description=found.description or "")


def volume_description(domain: str) -> str:
    """What the Host writes on a volume it creates; it names the server whose data the volume holds."""
    return f"{DESCRIPTION_PREFIX}{domain} (PostgreSQL, media store, signing key)"


def server_name_of(kept: KeptVolume) -> str | None:
    """The Matrix server a volume made by this program belongs to (None: not one of ours)."""
    if not kept.description.startswith(DESCRIPTION_PREFIX):
        return None
    return kept.description[len(DESCRIPTION_PREFIX):].split(" ", 1)[0]


def plan(settings: Settings, kept: KeptVolume | None) -> VolumePlan:
    """Create or adopt; refuse, with one line naming the setting, what would lose or share data."""
    if kept is None:
        return VolumePlan(settings.volume_name, settings.volume_size_gb, None)
    value = settings.adopt_volume
    if kept.filesystem_type not in ADOPTABLE_FILESYSTEMS:
        raise invalid("adoptVolume", value, f"a volume with an XFS filesystem (this one is {kept.filesystem_type}; "
                      "matrix-stack never reformats a volume that holds data)")
    server_name = server_name_of(kept)
    if server_name is not None and server_name != settings.domain:
        raise invalid("adoptVolume", value, f"a volume of the Matrix server {settings.domain} (this one holds "
                      f"{server_name}'s data; a server name never changes, so set domain to {server_name})")
    others = [name for name in kept.attached_to if name != settings.resource_prefix]
    if others:
        raise invalid("adoptVolume", value, f"a volume attached to no other droplet (it is attached to "
                      f"{', '.join(others)}: `pulumi destroy` the stack that uses it, or detach it, first)")
    if settings.volume_size_gb < kept.size_gb:
        raise invalid("volumeSizeGb", settings.volume_size_gb,
                      f"at least {kept.size_gb}, the size of the adopted volume {value} (volumes only grow)")
    if kept.attached_to:  # ours already: a later run, where volumeSizeGb applies as usual
        return VolumePlan(kept.name, settings.volume_size_gb, kept.id)
    warnings = []
    if settings.volume_size_gb > kept.size_gb:
        warnings.append(f"adoptVolume: {value} is adopted at its size, {kept.size_gb} GB; volumeSizeGb="
                        f"{settings.volume_size_gb} grows it at the next `pulumi up`")
    return VolumePlan(kept.name, kept.size_gb, kept.id, warnings)


def volume_plan(settings: Settings) -> VolumePlan:
    """Look up and plan; warnings go to the `pulumi up` log."""
    result = plan(settings, look_up(settings))
    for warning in result.warnings:
        pulumi.log.warn(warning)
    return result
