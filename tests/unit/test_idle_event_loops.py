"""The e2e deployment closes idle event loops around each recording; a loop the garbage collector already
finalized (its self-pipe closed, kept alive by a recorded ResourceWarning) must not stop the next recording.
Only this test's own loops are touched: other tests of the same process may hold idle loops they still use."""

from __future__ import annotations

import asyncio

from tests.e2e.deployment import close_if_idle


def test_a_finalized_loop_is_skipped_and_a_live_idle_one_closed() -> None:
    finalized, idle = asyncio.new_event_loop(), asyncio.new_event_loop()
    finalized._ssock.close()  # type: ignore[attr-defined]  # what the collector's socket finalizer does
    try:
        close_if_idle(finalized)
        close_if_idle(idle)
        assert idle.is_closed() and not finalized.is_closed()
    finally:
        finalized._csock.close()  # type: ignore[attr-defined]
        finalized._selector.close()  # type: ignore[attr-defined]
        finalized._closed = True  # type: ignore[attr-defined]  # no ResourceWarning from this test's own loop
