"""A bounded load run against the deployed server: nothing lost, nothing refused.

20 clients chat in pairs through nginx on 443 (from the host side, as Cloudflare would connect),
each sending one message every two seconds for 60 s (600 messages) while long-polling /sync. That
is 2.5 times Synapse's default per-user message rate (rc_message: 0.2/s, burst 10), so the run also
proves that the admin API's per-user override (what an operator does for bots) really exempts
these users: without it Synapse refuses part of the sends with 429 (M_LIMIT_EXCEEDED).
Numbers (throughput, latency percentiles) are printed, never asserted.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.e2e.deployment import HOMESERVER, Deployment
from tests.e2e.load import LoadConfig, provision_users, run_load

pytestmark = pytest.mark.e2e

CLIENTS = 20
CONFIG = LoadConfig(duration=60.0, rate=0.5)


def test_twenty_clients_for_a_minute_lose_no_message(deployment: Deployment) -> None:
    users = provision_users(deployment.ssh, CLIENTS)
    assert len(users) == CLIENTS

    result = asyncio.run(run_load(HOMESERVER, deployment.edge_address, deployment.ca_file, users, CONFIG))
    print("\n" + result.summary())

    assert result.errors == []
    expected = CLIENTS * int(CONFIG.duration * CONFIG.rate)
    assert result.sent == expected, f"the server accepted {result.sent} of {expected} messages"
    assert result.lost == [], f"{len(result.lost)} messages never reached the other member of their room"
    assert result.mismatched == []
    assert result.received == result.sent
