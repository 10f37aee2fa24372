import pytest

from tests.harness import Recording, record


@pytest.fixture(scope="module")
def graph() -> Recording:
    """The default program's recorded graph (shared by a module's read-only tests)."""
    return record()
