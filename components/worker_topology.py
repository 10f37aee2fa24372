"""synapseWorkers: which Synapse worker processes run, what each serves, and which paths nginx sends them.

One table, read by the settings (connection pools, caches), the Synapse step (a config file and a
unit instance per worker), the Redis step and nginx (routing). The topology follows Synapse's
workers documentation (docs/workers.md, "Available worker applications"):
- `sync1`: a generic worker for the sync endpoints, the long-polls that cost a homeserver with
  syncing clients the most;
- `client1`: a generic worker for the rest of the documented client API and inbound federation
  (sending an event there creates it; the main process still persists it);
- `media1`: the media repository (uploads, downloads, thumbnails and their background jobs);
- `federation_sender1`: outbound federation, off the main process.
The main process keeps everything not listed (the admin API, event persistence, background tasks)
and its replication listener, which the workers reach over loopback with a shared secret. Every
process talks to the others through Redis (pub/sub), also on loopback with a password.

An event persister is not split off: on the 2-CPU droplets workers are meant for, each process costs
about 100 MiB and another replication hop per event; Synapse's docs present it as the step after these.
"""

from __future__ import annotations

from dataclasses import dataclass

REPLICATION_LISTEN = ("127.0.0.1", 9093)  # the main process's replication listener (never public)
REDIS_LISTEN = ("127.0.0.1", 6379)
MAIN_UPSTREAM = "synapse_main"


@dataclass(frozen=True)
class Worker:
    """One worker process: its Synapse app, name, HTTP listener (0: none) and resources."""

    name: str
    app: str
    port: int
    resources: tuple[str, ...]
    paths: tuple[str, ...]  # regular expressions on the request path nginx routes here, in order

    @property
    def upstream(self) -> str:
        """The nginx upstream that names this worker in the routing map."""
        return f"synapse_{self.name}"


# docs/workers.md, synapse.app.generic_worker: "Sync requests".
SYNC_PATHS = (
    r"^/_matrix/client/(r0|v3)/sync$",
    r"^/_matrix/client/(api/v1|r0|v3)/events$",
    r"^/_matrix/client/(api/v1|r0|v3)/initialSync$",
    r"^/_matrix/client/(api/v1|r0|v3)/rooms/[^/]+/initialSync$",
    # Simplified sliding sync (Element X's only sync): a long-poll like /sync, so on the sync worker, as the
    # anchors route it (Synapse's docs list it among the generic worker's client requests).
    r"^/_matrix/client/unstable/org\.matrix\.simplified_msc3575/sync$",
)

# docs/workers.md, synapse.app.generic_worker: federation, client, encryption, login and event
# sending requests, the user directory, and /messages (one instance serves a room's pagination).
# The SSO, MSC3861 and GET-only stream-writer lists are left out: this stack uses none of them.
CLIENT_PATHS = (
    r"^/_matrix/federation/v1/version$",
    r"^/_matrix/federation/v1/event/",
    r"^/_matrix/federation/v1/state/",
    r"^/_matrix/federation/v1/state_ids/",
    r"^/_matrix/federation/v1/backfill/",
    r"^/_matrix/federation/v1/get_missing_events/",
    r"^/_matrix/federation/v1/publicRooms",
    r"^/_matrix/federation/v1/query/",
    r"^/_matrix/federation/v1/make_join/",
    r"^/_matrix/federation/v1/make_leave/",
    r"^/_matrix/federation/(v1|v2)/send_join/",
    r"^/_matrix/federation/(v1|v2)/send_leave/",
    r"^/_matrix/federation/v1/make_knock/",
    r"^/_matrix/federation/v1/send_knock/",
    r"^/_matrix/federation/(v1|v2)/invite/",
    r"^/_matrix/federation/v1/event_auth/",
    r"^/_matrix/federation/v1/timestamp_to_event/",
    r"^/_matrix/federation/v1/exchange_third_party_invite/",
    r"^/_matrix/federation/v1/user/devices/",
    r"^/_matrix/key/v2/query",
    r"^/_matrix/federation/v1/hierarchy/",
    r"^/_matrix/federation/v1/send/",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/createRoom$",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/publicRooms$",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/joined_members$",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/context/.*$",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/members$",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/state$",
    r"^/_matrix/client/v1/rooms/.*/hierarchy$",
    r"^/_matrix/client/(v1|unstable)/rooms/.*/relations/",
    r"^/_matrix/client/v1/rooms/.*/threads$",
    r"^/_matrix/client/(r0|v3|unstable)/account/3pid$",
    r"^/_matrix/client/(r0|v3|unstable)/account/whoami$",
    r"^/_matrix/client/(r0|v3|unstable)/account/deactivate$",
    r"^/_matrix/client/(r0|v3)/delete_devices$",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/devices(/|$)",
    r"^/_matrix/client/versions$",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/voip/turnServer$",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/event/",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/joined_rooms$",
    r"^/_matrix/client/v1/rooms/.*/timestamp_to_event$",
    r"^/_matrix/client/(api/v1|r0|v3|unstable/.*)/rooms/.*/aliases",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/search$",
    r"^/_matrix/client/(r0|v3|unstable)/user/.*/filter(/|$)",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/directory/room/.*$",
    r"^/_matrix/client/(r0|v3|unstable)/capabilities$",
    r"^/_matrix/client/(r0|v3|unstable)/notifications$",
    r"^/_matrix/client/(r0|v3|unstable)/keys/query$",
    r"^/_matrix/client/(r0|v3|unstable)/keys/changes$",
    r"^/_matrix/client/(r0|v3|unstable)/keys/claim$",
    r"^/_matrix/client/(r0|v3|unstable)/room_keys/",
    r"^/_matrix/client/(r0|v3|unstable)/keys/upload",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/keys/device_signing/upload$",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/keys/signatures/upload$",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/login$",
    r"^/_matrix/client/(r0|v3|unstable)/register$",
    r"^/_matrix/client/(r0|v3|unstable)/register/available$",
    r"^/_matrix/client/v1/register/m.login.registration_token/validity$",
    r"^/_matrix/client/(r0|v3|unstable)/password_policy$",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/redact",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/send",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/state/",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/(join|invite|leave|ban|unban|kick)$",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/join/",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/knock/",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/profile/",
    r"^/_matrix/client/(r0|v3|unstable)/user_directory/search$",
    r"^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/messages$",
)

# docs/workers.md, synapse.app.media_repository: every endpoint under these prefixes (nginx exposes
# only /_matrix and /_synapse/client, so /_synapse/media/ and the media admin API stay closed).
MEDIA_PATHS = (r"^/_matrix/media/", r"^/_matrix/client/v1/media/", r"^/_matrix/federation/v1/media/")

WORKERS: tuple[Worker, ...] = (
    Worker("sync1", "synapse.app.generic_worker", 8083, ("client",), SYNC_PATHS),
    Worker("client1", "synapse.app.generic_worker", 8084, ("client", "federation"), CLIENT_PATHS),
    Worker("media1", "synapse.app.media_repository", 8085, ("media",), MEDIA_PATHS),
    Worker("federation_sender1", "synapse.app.generic_worker", 0, (), ()),
)
FEDERATION_SENDERS = ("federation_sender1",)
MEDIA_WORKER = "media1"
PROCESSES = 1 + len(WORKERS)  # the main process and every worker, each with its own database pool
# A worker process is about 100 MiB; below this, the processes crowd out PostgreSQL's cache.
MIN_MEMORY_MB = 4096
MIN_VCPUS = 2  # on one CPU the processes only take turns, and each adds its own overhead


def http_workers() -> tuple[Worker, ...]:
    """The workers with an HTTP listener: what nginx routes to and the health checks ask."""
    return tuple(w for w in WORKERS if w.port)
