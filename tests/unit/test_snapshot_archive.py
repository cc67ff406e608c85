"""Operator snapshots: the archive format (agent/catalog/archive.py), `RestoreCommand` through the
FSM, and the pure helpers of `waypost snapshot` / `waypost kv export|import`."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.catalog import archive
from agent.catalog.commands import KVCommand, KVOp, RegisterCommand, RestoreCommand, decode, encode
from agent.catalog.fsm import CatalogFSM
from agent.catalog.snapshot import SnapshotError
from agent.cli_common import CommandFailed
from agent.cli_kv import IMPORT_CHUNK_OPS, import_chunks, parse_export
from agent.cli_snapshot import format_inspect
from agent.types import Node, NodeService


def _fsm_with_data() -> CatalogFSM:
    fsm = CatalogFSM()
    fsm.apply(2, encode(RegisterCommand(Node("n1", "10.0.0.1"), NodeService("web1", "web", port=80))))
    fsm.apply(3, encode(KVCommand(KVOp("set", "app/a", b"one", flags=7))))
    fsm.apply(4, encode(KVCommand(KVOp("set", "app/b", b"two"))))
    return fsm


# ------------------------------------------------------------------ archive format


def test_archive_round_trip_and_header() -> None:
    payload = _fsm_with_data().snapshot()
    blob = archive.encode(payload, index=4, term=2, created_ms=1700000000123)
    header, back = archive.decode(blob)
    assert back == payload
    assert header == archive.ArchiveHeader(1, "2-4-1700000000123", 4, 2, len(payload), archive.checksum(payload))
    assert header.to_api()["ID"] == "2-4-1700000000123"


@given(st.binary(max_size=2048), st.integers(0, 2**63), st.integers(0, 2**32))
def test_archive_round_trips_any_payload(payload: bytes, index: int, term: int) -> None:
    header, back = archive.decode(archive.encode(payload, index, term, 5))
    assert back == payload and (header.index, header.term, header.size) == (index, term, len(payload))


def _bad_archives() -> dict[str, bytes]:
    good = archive.encode(b"payload-bytes", 9, 1, 0)
    magic_end = len(archive.MAGIC)
    header_end = good.index(b"\n", magic_end) + 1
    header = json.loads(good[magic_end:header_end])

    def with_header(**changes: object) -> bytes:
        return archive.MAGIC + json.dumps({**header, **changes}).encode() + b"\n" + good[header_end:]

    flipped = bytearray(good)
    flipped[-1] ^= 0x01
    return {
        "empty": b"",
        "bad magic": b"NOT-A-SNAPSHOT\n" + good[magic_end:],
        "no header end": archive.MAGIC + b"{" + b" " * (archive.MAX_HEADER + 10),
        "header not json": archive.MAGIC + b"{nope\n" + good[header_end:],
        "header not object": archive.MAGIC + b"[1]\n" + good[header_end:],
        "future version": with_header(Version=99),
        "negative index": with_header(Index=-1),
        "bool term": with_header(Term=True),
        "missing checksum": with_header(Checksum=None),
        "truncated": good[:-3],
        "trailing bytes": good + b"x",
        "flipped bit": bytes(flipped),
        "wrong checksum": with_header(Checksum="sha256:" + "0" * 64),
    }


@pytest.mark.parametrize("name", sorted(_bad_archives()))
def test_bad_archives_are_refused(name: str) -> None:
    with pytest.raises(archive.ArchiveError):
        archive.decode(_bad_archives()[name])


# ------------------------------------------------------------------ RestoreCommand through the FSM


def test_restore_command_encodes() -> None:
    assert decode(encode(RestoreCommand(b"\x00\x01snap"))) == RestoreCommand(b"\x00\x01snap")


def test_restore_command_replaces_state_rebased_to_its_index() -> None:
    source = _fsm_with_data()
    payload = source.snapshot()
    fsm = CatalogFSM()
    fsm.apply(2, encode(RegisterCommand(Node("other", "10.0.0.9"), NodeService("db1", "db"))))
    for i in range(3, 12):
        fsm.apply(i, encode(KVCommand(KVOp("set", f"junk/{i}", b"x"))))
    woken_store: list[int] = []
    woken_kv: list[int] = []
    fsm.store.watch(["service.db"], woken_store.append)
    fsm.kv.watch(woken_kv.append, prefixes=["app/"])

    fsm.apply(20, encode(RestoreCommand(payload)))

    assert woken_store == [20] and woken_kv == [20]
    assert fsm.last_index == 20
    assert fsm.store.node("other")[1] is None and [n.node for n in fsm.store.nodes()[1]] == ["n1"]
    # every watch key (old ones included) moves to the restore index: indexes never go back
    assert fsm.store.index_of("service.db") == 20 and fsm.store.index_of("service.web") == 20
    assert fsm.store.nodes()[0] == 20
    _, entry = fsm.kv.get("app/a")
    assert entry is not None and entry.value == b"one" and entry.flags == 7 and entry.modify_index == 3
    assert fsm.kv.get("junk/5")[1] is None and fsm.kv.get("junk/5")[0] == 20
    assert fsm.kv.events_since(11) is None  # history before the restore is gone: 410, not a gap
    assert fsm.kv.events_since(20) == []
    fsm.apply(21, encode(KVCommand(KVOp("set", "app/c", b"three"))))
    assert [e.index for e in fsm.kv.events_since(20)] == [21]


def test_bad_restore_command_changes_nothing() -> None:
    fsm = _fsm_with_data()
    before = fsm.snapshot()
    store, kv = fsm.store, fsm.kv
    with pytest.raises(SnapshotError):
        fsm.apply(5, encode(RestoreCommand(b"\xc1garbage")))
    assert fsm.store is store and fsm.kv is kv and fsm.last_index == 5
    assert fsm.kv.get("app/a")[1] is not None and len(fsm.kv) == 2
    assert CatalogFSM().restore(before) is None  # the pre-restore snapshot is still a good one


# ------------------------------------------------------------------ CLI helpers


def test_inspect_prints_consul_fields_and_counts() -> None:
    payload = _fsm_with_data().snapshot()
    header, _ = archive.decode(archive.encode(payload, 4, 2, 99))
    text = format_inspect(header, payload)
    lines = {line.split()[0]: line.split()[-1] for line in text.splitlines() if line.strip()}
    assert lines["ID"] == "2-4-99" and lines["Index"] == "4" and lines["Term"] == "2"
    assert lines["Version"] == "1" and lines["Size"] == str(len(payload))
    assert " Nodes        1" in text and " Services     1" in text


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_parse_export_applies_prefix_and_validates() -> None:
    doc = json.dumps([{"key": "a", "flags": 3, "value": _b64(b"x")}, {"key": "b/c", "flags": 0, "value": ""}])
    assert parse_export(doc.encode(), "new/") == [("new/a", 3, _b64(b"x")), ("new/b/c", 0, "")]
    for bad in (b"not json", b"{}", b'[{"flags": 1}]', b'[{"key": "a", "value": "!!!"}]',
                b'[{"key": "a", "flags": -1}]', b'[{"key": "a", "flags": "1"}]'):
        with pytest.raises(CommandFailed):
            parse_export(bad)


def test_import_chunks_respect_op_and_size_limits() -> None:
    rows = [(f"k{i}", 0, "") for i in range(IMPORT_CHUNK_OPS * 2 + 1)]
    assert [len(c) for c in import_chunks(rows)] == [IMPORT_CHUNK_OPS, IMPORT_CHUNK_OPS, 1]
    big = "A" * 400_000
    assert [len(c) for c in import_chunks([("a", 0, big), ("b", 0, big), ("c", 0, "")])] == [1, 2]
    assert import_chunks([]) == []
