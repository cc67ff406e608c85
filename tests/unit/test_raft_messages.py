"""Raft messages ↔ records ↔ msgpack: exact round trips and clean errors on bad input."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.raft.codec import decode, encode
from agent.raft.messages import (
    MESSAGE_TYPES,
    AppendEntries,
    EntryKind,
    InstallSnapshot,
    LogEntry,
    MalformedMessage,
    Membership,
    Snapshot,
    from_record,
    to_record,
)

ids = st.text(min_size=1, max_size=8)
entries = st.builds(LogEntry, st.integers(1, 2**40), st.integers(0, 2**40), st.sampled_from(list(EntryKind)),
                    st.binary(max_size=40))
snapshots = st.builds(Snapshot, st.integers(0, 2**40), st.integers(0, 2**40),
                      st.builds(Membership.of, st.lists(ids, max_size=4), st.lists(ids, max_size=2)),
                      st.binary(max_size=64))


def message_strategy(cls: type) -> st.SearchStrategy:
    special = {"entries": st.lists(entries, max_size=4).map(tuple), "snapshot": snapshots,
               "src": ids, "dst": ids, "context": st.binary(max_size=16)}
    kwargs = {}
    for name, field in cls.__dataclass_fields__.items():
        if name in special:
            kwargs[name] = special[name]
        elif field.type in ("bool",):
            kwargs[name] = st.booleans()
        else:
            kwargs[name] = st.integers(0, 2**40)
    return st.builds(cls, **kwargs)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(st.one_of([message_strategy(cls) for cls in MESSAGE_TYPES]))
def test_every_message_round_trips_through_msgpack(msg: object) -> None:
    assert decode(encode(msg)) == msg  # type: ignore[arg-type]
    assert from_record(to_record(msg)) == msg  # type: ignore[arg-type]


def test_entries_and_snapshots_keep_bytes_and_ids() -> None:
    m = AppendEntries(3, "a", "b", 4, 2, (LogEntry(5, 3, EntryKind.CONFIG, Membership.of("ab").encode()),), 4)
    back = decode(encode(m))
    assert isinstance(back, AppendEntries)
    assert Membership.decode(back.entries[0].data) == Membership(("a", "b"), ())
    s = InstallSnapshot(1, "a", "b", Snapshot(9, 2, Membership.of(["a"], ["c"]), b"\x00state"))
    assert decode(encode(s)) == s


@pytest.mark.parametrize("blob", [
    b"", b"\x93\x01", msgpack.packb([99, 1]), msgpack.packb([0, 1, "a"]), msgpack.packb("x"),
    msgpack.packb([0, 1, "a", "b", 1, 1, [[1, 1, 7, b""]], 0]),     # unknown entry kind
    msgpack.packb([0, True, "a", "b", 1, 1, [], 0]),                 # bool where an int belongs
    msgpack.packb([2, 1, "a", "b", 1, "ctx", 0]),                    # str where bytes belong
    msgpack.packb([6, 1, "a", "b", [1, 1, ["x"], [], "notbytes"]]),  # bad snapshot
])
def test_malformed_input_raises_malformed_message(blob: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode(blob)


def test_membership_is_sorted_and_learners_exclude_voters() -> None:
    m = Membership.of(["c", "a", "b"], ["b", "d"])
    assert m.voters == ("a", "b", "c") and m.learners == ("d",)
    assert Membership.decode(m.encode()) == m
    with pytest.raises(MalformedMessage):
        Membership.decode(b"{}")
