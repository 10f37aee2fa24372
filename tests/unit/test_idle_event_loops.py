"""The e2e deployment closes idle event loops around each recording; a loop the garbage collector already
finalized (its self-pipe closed, kept alive by a recorded ResourceWarning) must not stop the next recording."""

from __future__ import annotations

import asyncio

from tests.e2e.deployment import _close_idle_event_loops


def test_a_finalized_loop_is_skipped_and_a_live_idle_one_closed() -> None:
    finalized, idle = asyncio.new_event_loop(), asyncio.new_event_loop()
    finalized._ssock.close()  # type: ignore[attr-defined]  # what the collector's socket finalizer does
    try:
        _close_idle_event_loops()
        assert idle.is_closed() and not finalized.is_closed()
    finally:
        finalized._csock.close()  # type: ignore[attr-defined]
        finalized._selector.close()  # type: ignore[attr-defined]
        finalized._closed = True  # type: ignore[attr-defined]  # no ResourceWarning from this test's own loop
