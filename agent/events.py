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
- `EventRing` keeps the newest `capacity` (256, like Consul) events an agent received, stamps each
  with the next Lamport time, and wakes `watch(callback)` watchers once per added event.
- `event_index(events)` is Consul's agent-local, non-monotonic blocking index: the XOR of the two
  halves of the newest event's UUID, or 1 when there is none (never 0, so loops do not spin).
"""

from __future__ import annotations

import base64
import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from agent.catalog.watch import Watchers, WatchHandle
from agent.errors import BadRequest, PayloadTooLarge

RING_SIZE = 256  # Consul's userEventRing size
MAX_EVENT_BYTES = 512  # serf's default UserEventSizeLimit (name + payload here)
EVENT_VERSION = 1
_KEY = "events"


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


class EventRing:
    """The newest `capacity` user events this agent received, oldest first."""

    def __init__(self, capacity: int = RING_SIZE) -> None:
        if capacity < 1:
            raise ValueError("event ring capacity must be at least 1")
        self._events: deque[UserEvent] = deque(maxlen=capacity)
        self._watchers = Watchers()
        self.ltime = 0  # this agent's Lamport clock for user events

    def __len__(self) -> int:
        return len(self._events)

    def add(self, event: UserEvent) -> UserEvent:
        self.ltime += 1
        stored = replace(event, ltime=self.ltime)
        self._events.append(stored)
        self._watchers.fire([_KEY], self.ltime)
        return stored

    def list(self, name: str = "") -> list[UserEvent]:
        return [e for e in self._events if not name or e.name == name]

    def watch(self, callback: Callable[[int], None]) -> WatchHandle:
        """Call `callback(ltime)` once, when the next event is added."""
        return self._watchers.add([_KEY], callback)
