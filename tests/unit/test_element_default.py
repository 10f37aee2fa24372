"""The default Element Web must work with the default Synapse, whose behaviour moved on.

Synapse 1.163 serves new media only through the authenticated media endpoints
(`enable_authenticated_media` defaults to true) and creates room version 12 by default. The
Element Web releases that first handle each, from Element's own changelogs:
- 1.11.70 (2024-07-08): "Use stable endpoints for MSC3916" (element-hq/element-web #27558);
- 1.11.109 (2025-08-11): "supports the upcoming v12 ("hydra") Matrix room version and is
  necessary to view and participate in these rooms" (element-web #30452, #30526).
These are written here again on purpose, independent of the settings' own floor.
"""

from __future__ import annotations

import pytest

from components.settings import DEFAULTS, SettingsError, load
from tests.unit.test_settings import raw

FIRST_WITH_AUTHENTICATED_MEDIA = (1, 11, 70)
FIRST_WITH_ROOM_VERSION_12 = (1, 11, 109)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_default_element_handles_authenticated_media_and_room_version_12() -> None:
    default = _version(DEFAULTS["elementVersion"])
    assert default >= FIRST_WITH_AUTHENTICATED_MEDIA, "the default Element cannot show media from this Synapse"
    assert default >= FIRST_WITH_ROOM_VERSION_12, "the default Element cannot join rooms this Synapse creates"
    assert default[:2] >= (1, 12), "the default Element should be a current 1.12.x release"


@pytest.mark.parametrize("version", ["1.11.51", "1.11.69", "1.11.108"])
def test_an_element_too_old_for_this_synapse_is_refused(version: str) -> None:
    with pytest.raises(SettingsError, match=r"elementVersion='[0-9.]+' is invalid: Element Web 1\.11\.109 or newer"):
        load(raw(elementVersion=version))


def test_the_first_release_that_handles_both_is_accepted() -> None:
    assert load(raw(elementVersion="1.11.109"))[0].element_version == "1.11.109"
