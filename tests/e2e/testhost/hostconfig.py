"""What the host's own package registries are, read from its apt and pip configuration.

The guest may reach only these registries (through the forward proxy), so their names are
read at run time rather than written into the code.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

APT_SOURCES = Path("/etc/apt/sources.list")
OS_RELEASE = Path("/etc/os-release")
APT_SOURCES_DIR = Path("/etc/apt/sources.list.d")
PIP_CONFIG_FILES = (
    Path("/etc/pip.conf"),
    Path("/etc/xdg/pip/pip.conf"),
    Path.home() / ".config/pip/pip.conf",
    Path.home() / ".pip/pip.conf",
)
# pip's built-in default index, used only when the host configures none.
DEFAULT_PIP_INDEX = "https://pypi.org/simple"
DEFAULT_PIP_FILE_HOST = "files.pythonhosted.org"


@dataclass(frozen=True)
class AptSource:
    """One enabled apt source: a base URI, its suites and components."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


def _deb822_sources(text: str) -> list[AptSource]:
    sources = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line[0] in " \t" and key:
                fields[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            sources.append(
                AptSource(uri, tuple(fields.get("suites", "").split()),
                          tuple(fields.get("components", "").split()))
            )
    return sources


def _one_line_sources(text: str) -> list[AptSource]:
    sources = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        if words and words[0].startswith("["):
            while words and not words[0].endswith("]"):
                words = words[1:]
            words = words[1:]
        if len(words) >= 2:
            sources.append(AptSource(words[0], (words[1],), tuple(words[2:])))
    return sources


def apt_sources() -> list[AptSource]:
    """Every enabled `deb` source of the host (apt itself ignores other file names)."""
    sources: list[AptSource] = []
    if APT_SOURCES.is_file():
        sources += _one_line_sources(APT_SOURCES.read_text())
    if APT_SOURCES_DIR.is_dir():
        for path in sorted(APT_SOURCES_DIR.iterdir()):
            if path.suffix == ".list":
                sources += _one_line_sources(path.read_text())
            elif path.suffix == ".sources":
                sources += _deb822_sources(path.read_text())
    return sources


def host_release() -> str:
    """The host's own Debian codename (VERSION_CODENAME in /etc/os-release)."""
    for line in OS_RELEASE.read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "VERSION_CODENAME":
            return value.strip().strip('"')
    raise RuntimeError(f"no VERSION_CODENAME in {OS_RELEASE}")


def _sources_of(release: str) -> list[AptSource]:
    return [
        AptSource(s.uri, tuple(x for x in s.suites if x.split("-")[0] == release), s.components)
        for s in apt_sources()
        if any(x.split("-")[0] == release for x in s.suites)
    ]


def debian_sources(release: str) -> list[AptSource]:
    """The host's sources for one Debian release (its suites start with the release name).

    A release the host does not list (a Debian 12 host building a Debian 13 guest) comes from the
    same mirrors: the host's own release's suites with the codename swapped (trixie, trixie-updates,
    trixie-security)."""
    found = _sources_of(release)
    if found:
        return found
    own = host_release()
    return [
        AptSource(s.uri, tuple(release + x[len(own):] for x in s.suites), s.components)
        for s in _sources_of(own)
    ]


def debian_mirror(release: str) -> str:
    """The host's main archive mirror for `release`: the source that carries the bare suite."""
    for source in debian_sources(release):
        if release in source.suites:
            return source.uri
    raise RuntimeError(f"no apt source for Debian {release} in the host's configuration")


def _pip_values(key: str) -> list[str]:
    values: list[str] = []
    env = os.environ.get("PIP_" + key.upper().replace("-", "_"))
    if env:
        values += env.split()
    parser = configparser.ConfigParser(interpolation=None)
    for path in PIP_CONFIG_FILES:
        try:
            parser.read(path)
        except (configparser.Error, OSError):
            continue
    for section in ("global", "install", "download"):
        if parser.has_option(section, key):
            values += parser.get(section, key).split()
    return values


def pip_index_url() -> str:
    """The index the host's pip uses (first http(s) index-url), else pip's default."""
    for url in _pip_values("index-url"):
        if urlsplit(url).scheme in ("http", "https"):
            return url
    return DEFAULT_PIP_INDEX


def pip_extra_urls() -> list[str]:
    """Extra http(s) indexes and find-links of the host; file:// and local dirs are useless in a guest."""
    return [
        url for key in ("extra-index-url", "find-links") for url in _pip_values(key)
        if urlsplit(url).scheme in ("http", "https")
    ]


def registry_hosts() -> frozenset[str]:
    """Host names the guest may reach: the host's apt mirrors and pip indexes, nothing else."""
    hosts = {urlsplit(s.uri).hostname for s in apt_sources()}
    index = pip_index_url()
    hosts |= {urlsplit(u).hostname for u in [index, *pip_extra_urls()]}
    if index == DEFAULT_PIP_INDEX:
        hosts.add(DEFAULT_PIP_FILE_HOST)
    return frozenset(h.lower() for h in hosts if h)
