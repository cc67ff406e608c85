"""Gossip wire messages: exact round trips, strict decoding, and no exception escapes on garbage."""

from __future__ import annotations

import random

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.gossip.messages import (
    Ack,
    Alive,
    Compound,
    Dead,
    IndirectPing,
    MalformedMessage,
    Member,
    MemberState,
    Nack,
    NodeState,
    Ping,
    PushPull,
    Suspect,
    decode,
    encode,
    encode_compound,
    join_hostport,
    split_hostport,
)
from agent.gossip.swim import Swim, SwimConfig

SAMPLES = [
    Ping(1, "n1", "n0", "10.0.0.1:8301"),
    IndirectPing(2, "n2", "10.0.0.2:8301", "n0", "10.0.0.1:8301", True),
    Ack(3, "n1"),
    Nack(4, "n3"),
    Alive("n1", "10.0.0.2", 8301, 7, {"role": "consul", "dc": "dc1"}),
    Suspect("n1", 7, "n0"),
    Dead("n1", 8, "n1", True),
    Dead("n1", 8, "n2"),
    PushPull(True, False, (NodeState("n1", "::1", 8301, 2, MemberState.LEFT, {"a": "b"}),)),
    PushPull(False, True, ()),
    Compound((encode(Ack(3, "n1")), encode(Suspect("n1", 7, "n0")))),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: object) -> None:
    assert decode(encode(msg)) == msg  # type: ignore[arg-type]


def test_compound_of_one_is_the_message_itself() -> None:
    part = encode(Ack(1, "a"))
    assert encode_compound([part]) == part
    assert decode(encode_compound([part, part])) == Compound((part, part))


@pytest.mark.parametrize("record", [
    [], [99], [2, 1], [2, -1, "a"], [2, 1, b"a"], [0, 1, "a", "b"], [4, "n", "h", 70000, 1, {}],
    [4, "n", "h", 1, 1, {"a": 1}], [6, "n", 1, "s", 1], [7, True, False, [["n", "h", 1, 1, 9, {}]]],
    [7, True, False, "x"], [8, ["notbytes"]], {"a": 1}, "ping", [True, 1, "a"],
])
def test_bad_records_are_malformed(record: object) -> None:
    with pytest.raises(MalformedMessage):
        decode(msgpack.packb(record, use_bin_type=True))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_decode_or_raise_malformed(data: bytes) -> None:
    try:
        decode(data)
    except MalformedMessage:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_core_counts_malformed_and_never_raises(data: bytes, stream: bool) -> None:
    swim = Swim("me", "10.0.0.1", 8301, {}, SwimConfig.lan(), random.Random(0), 0.0)
    swim.receive(data, "10.0.0.9:8301", 1.0, stream=stream)
    swim.receive(encode_compound([data, data]), "10.0.0.9:8301", 1.0, stream=stream)
    assert swim.member("me") is not None


_scalar = st.one_of(st.integers(-3, 70000), st.text(max_size=8), st.binary(max_size=8), st.booleans(), st.none())
_value = st.recursive(_scalar, lambda inner: st.one_of(st.lists(inner, max_size=6),
                                                        st.dictionaries(st.text(max_size=4), inner, max_size=3)),
                      max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 9), st.lists(_value, max_size=7), st.booleans())
def test_record_shaped_garbage_is_counted_not_raised(tag: int, fields: list[object], stream: bool) -> None:
    swim = Swim("me", "10.0.0.1", 8301, {}, SwimConfig.lan(), random.Random(0), 0.0)
    data = msgpack.packb([tag, *fields], use_bin_type=True)
    swim.receive(data, "10.0.0.9:8301", 1.0, stream=stream)
    swim.receive(encode_compound([data, data]), "10.0.0.9:8301", 1.0, stream=stream)
    swim.tick(swim.next_deadline())


def test_mutated_valid_packets_never_raise() -> None:
    seed = 1234
    rng = random.Random(seed)
    swim = Swim("me", "10.0.0.1", 8301, {}, SwimConfig.lan(), random.Random(seed), 0.0)
    base = [encode(m) for m in SAMPLES]  # type: ignore[arg-type]
    for _ in range(3000):
        data = bytearray(rng.choice(base))
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        swim.receive(bytes(data), "10.0.0.9:8301", 1.0, stream=rng.random() < 0.5)
    assert swim.stats["malformed"] > 0, f"seed={seed}"


def test_serf_status() -> None:
    def member(state: MemberState) -> Member:
        return Member("n", "h", 1, {}, state, 1, 0.0)
    assert [member(s).serf_status() for s in MemberState] == [1, 1, 4, 3]


def test_hostport() -> None:
    assert join_hostport("10.0.0.1", 8301) == "10.0.0.1:8301"
    assert join_hostport("::1", 8301) == "[::1]:8301"
    assert split_hostport("[::1]:8301") == ("::1", 8301)
    assert split_hostport("10.0.0.1:81") == ("10.0.0.1", 81)
    assert split_hostport("example.com", 8301) == ("example.com", 8301)
    assert split_hostport("::1", 8301) == ("::1", 8301)
    for bad in ("10.0.0.1:x", "10.0.0.1:0", "[::1", "[::1]x", "h:70000"):
        with pytest.raises(ValueError):
            split_hostport(bad, 8301)
    with pytest.raises(ValueError):
        split_hostport("host")
