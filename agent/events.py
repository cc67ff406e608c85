"""User events: validation, agent-side filtering and the per-agent ring (reference §6.1) (layer 1, pure).

Contract:
- `UserEvent` is one fired event; `to_api()` is Consul's JSON shape (`ID`, `Name`, `Payload` base64
  or null, `NodeFilter`, `ServiceFilter`, `TagFilter`, `Version`, `LTime`).
- `validate(event)` raises `BadRequest` subclasses (`InvalidEvent`) for a missing or reserved (`_`)
  name, a tag filter without a service filter, or a filter that is not a valid regex, and
  `PayloadTooLarge` when name + payload exceed `MAX_EVENT_BYTES` (serf's user-event limit).
- `applies_to(event, node, services)` is Consul's `shouldProcessUserEvent`: the node filter must match
  the node name, the service filter some local service, the tag filter one of that service's tags
  (regexes, `re.search` like Go's `MatchString`).
- `EventRing` keeps the newest `capacity` (256, like Consul) events an agent received and wakes
  `watch(callback)` watchers once per kept event. Its `ltime` is this agent's Lamport clock for
  user events (serf's event clock): `add(event)` stamps the next time (a purely local event);
  `fire(event, node, services)` is an event fired at this agent: it takes the next time, keeps the
  event when its filters match this agent, remembers its ID and hands it (stamped) to
  `publisher`, which the agent sets to spread it to the cluster (agent.gossip.userevents);
  `receive(event, node, services)` is an event from another agent: a duplicate ID (`RecentIds`,
  the newest `RECENT_IDS` IDs seen) is ignored; otherwise the clock witnesses the sender's time
  and the event is kept with that time, as serf does (one event has the same `LTime` on every
  agent), when its filters match. It returns `KEPT`, `DUPLICATE` or `FILTERED`.
- `local_view(state)` is what the filters are evaluated against: this agent's node name and its
  local services with their tags.
- `event_index(events)` is Consul's agent-local, non-monotonic blocking index: the XOR of the two
  halves of the newest event's UUID, or 1 when there is none (never 0, so loops do not spin).
"""

from __future__ import annotations

import base64
import re
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from agent.catalog.watch import Watchers, WatchHandle
from agent.errors import BadRequest, PayloadTooLarge

if TYPE_CHECKING:
    from agent.local.state import LocalState

RING_SIZE = 256  # Consul's userEventRing size
MAX_EVENT_BYTES = 512  # serf's default UserEventSizeLimit (name + payload here)
EVENT_VERSION = 1
RECENT_IDS = 4096  # event IDs remembered for dedup: 16 rings' worth, far beyond any redelivery
KEPT, DUPLICATE, FILTERED = "kept", "duplicate", "filtered"
_KEY = "events"

LocalView = tuple[str, list[tuple[str, list[str]]]]  # (node name, [(service name, tags)])


class InvalidEvent(BadRequest):
    """A user event that cannot be fired (HTTP 400)."""


@dataclass(frozen=True, slots=True)
class UserEvent:
    id: str
    name: str
    payload: bytes | None = None
    node_filter: str = ""
    service_filter: str = ""
    tag_filter: str = ""
    version: int = EVENT_VERSION
    ltime: int = 0

    def to_api(self) -> dict:
        return {
            "ID": self.id, "Name": self.name,
            "Payload": None if self.payload is None else base64.b64encode(self.payload).decode(),
            "NodeFilter": self.node_filter, "ServiceFilter": self.service_filter,
            "TagFilter": self.tag_filter, "Version": self.version, "LTime": self.ltime,
        }


def _compile(what: str, pattern: str) -> re.Pattern[str] | None:
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise InvalidEvent(f"Invalid {what} filter {pattern!r}: {exc}") from None


def validate(event: UserEvent) -> None:
    if not event.name:
        raise InvalidEvent("Missing name")
    if event.name.startswith("_"):
        raise InvalidEvent(f"Invalid event name {event.name!r}: names starting with '_' are reserved")
    if event.tag_filter and not event.service_filter:
        raise InvalidEvent("cannot provide tag filter without service filter")
    _compile("node", event.node_filter)
    _compile("service", event.service_filter)
    _compile("tag", event.tag_filter)
    size = len(event.name.encode()) + len(event.payload or b"")
    if size > MAX_EVENT_BYTES:
        raise PayloadTooLarge(f"User event exceeds limit of {MAX_EVENT_BYTES} bytes (name + payload is {size})")


def applies_to(event: UserEvent, node: str, services: Iterable[tuple[str, Iterable[str]]]) -> bool:
    node_re = _compile("node", event.node_filter)
    if node_re is not None and not node_re.search(node):
        return False
    service_re = _compile("service", event.service_filter)
    if service_re is None:
        return True
    tag_re = _compile("tag", event.tag_filter)
    for name, tags in services:
        if service_re.search(name) and (tag_re is None or any(tag_re.search(t) for t in tags)):
            return True
    return False


def _uuid_to_uint64(uuid: str) -> int:
    """Consul's uuidToUint64: XOR of the UUID's first and last 64 bits."""
    hexdigits = uuid.replace("-", "")
    try:
        return int(hexdigits[:16], 16) ^ int(hexdigits[16:32], 16)
    except ValueError:
        return 1


def event_index(events: list[UserEvent]) -> int:
    return _uuid_to_uint64(events[-1].id) or 1 if events else 1


def local_view(state: LocalState) -> LocalView:
    """This agent's node name and local services (name, tags): what event filters match against."""
    return state.node.node, [(d.service.service, list(d.service.tags)) for d in state.services.values()]


class RecentIds:
    """The newest `capacity` event IDs seen (oldest forgotten first)."""

    def __init__(self, capacity: int = RECENT_IDS) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def seen(self, event_id: str) -> bool:
        """True when `event_id` was already seen; else remember it and return False."""
        if event_id in self._ids:
            return True
        self._ids[event_id] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return False


class EventRing:
    """The newest `capacity` user events this agent received, oldest first."""

    def __init__(self, capacity: int = RING_SIZE, recent: int = RECENT_IDS) -> None:
        if capacity < 1:
            raise ValueError("event ring capacity must be at least 1")
        self._events: deque[UserEvent] = deque(maxlen=capacity)
        self._watchers = Watchers()
        self.recent = RecentIds(recent)
        self.ltime = 0  # this agent's Lamport clock for user events
        self.publisher: Callable[[UserEvent], None] | None = None  # spreads fired events (set by the agent)

    def __len__(self) -> int:
        return len(self._events)

    def add(self, event: UserEvent) -> UserEvent:
        self.ltime += 1
        stored = replace(event, ltime=self.ltime)
        self._keep(stored)
        return stored

    def fire(self, event: UserEvent, node: str, services: Iterable[tuple[str, Iterable[str]]]) -> UserEvent:
        """An event fired at this agent (already validated): returns it stamped with our next time."""
        self.ltime += 1
        stamped = replace(event, ltime=self.ltime)
        self.recent.seen(stamped.id)
        if applies_to(stamped, node, services):
            self._keep(stamped)
        if self.publisher is not None:
            self.publisher(stamped)
        return stamped

    def receive(self, event: UserEvent, node: str, services: Iterable[tuple[str, Iterable[str]]]) -> str:
        """An event another agent fired (already validated): KEPT, DUPLICATE or FILTERED."""
        if self.recent.seen(event.id):
            return DUPLICATE
        self.ltime = max(self.ltime, event.ltime)  # Lamport witness: our next event is causally later
        if not applies_to(event, node, services):
            return FILTERED
        self._keep(event)
        return KEPT

    def _keep(self, event: UserEvent) -> None:
        self._events.append(event)
        self._watchers.fire([_KEY], self.ltime)

    def list(self, name: str = "") -> list[UserEvent]:
        return [e for e in self._events if not name or e.name == name]

    def watch(self, callback: Callable[[int], None]) -> WatchHandle:
        """Call `callback(ltime)` once, when the next event is kept."""
        return self._watchers.add([_KEY], callback)
