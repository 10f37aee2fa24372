from collections.abc import Iterator

import pytest

from tests.e2e.testhost.cloudflare_standin import CloudflareStandin
from tests.harness import Recording, record


@pytest.fixture(scope="module")
def graph() -> Recording:
    """The default program's recorded graph (shared by a module's read-only tests)."""
    return record()


@pytest.fixture
def zone_api() -> Iterator[CloudflareStandin]:
    """A Free zone example.org in the Cloudflare API stand-in, served over HTTP on loopback (for the program's
    dynamic providers, which call the API)."""
    standin = CloudflareStandin("127.0.0.1", 0, "example.org")
    standin.start()
    try:
        yield standin
    finally:
        standin.stop()
