"""FileStorage: what survives a crash, what is cut, and snapshot + truncation + restart."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from agent.raft.messages import EntryKind, HardState, LogEntry, Membership, Snapshot
from agent.raft.storage import FileStorage, StorageCorrupt


def entries(lo: int, hi: int, term: int = 1) -> list[LogEntry]:
    return [LogEntry(i, term, EntryKind.COMMAND, f"cmd-{i}".encode()) for i in range(lo, hi + 1)]


def reopen(path: Path) -> FileStorage:
    return FileStorage(path)


def test_round_trip_entries_hard_state_and_kinds(tmp_path: Path) -> None:
    s = FileStorage(tmp_path)
    s.save(HardState(2, "a", 3), [LogEntry(1, 1, EntryKind.CONFIG, b"{}"), *entries(2, 4, 2)], None)
    s.close()
    hard, snap, got = reopen(tmp_path).initial_state()
    assert hard == HardState(2, "a", 3) and snap is None
    assert [e.index for e in got] == [1, 2, 3, 4] and got[0].kind == EntryKind.CONFIG and got[3].data == b"cmd-4"


def test_conflicting_suffix_is_replaced_on_replay(tmp_path: Path) -> None:
    s = FileStorage(tmp_path)
    s.save(HardState(1, "", 0), entries(1, 5, 1), None)
    s.save(HardState(2, "", 0), entries(3, 4, 2), None)  # a new leader overwrote 3..5
    s.close()
    _, _, got = reopen(tmp_path).initial_state()
    assert [(e.index, e.term) for e in got] == [(1, 1), (2, 1), (3, 2), (4, 2)]


@pytest.mark.parametrize("cut", [1, 5, 13, 20])
def test_torn_tail_is_cut_and_never_returned(tmp_path: Path, cut: int) -> None:
    s = FileStorage(tmp_path)
    s.save(HardState(1, "", 2), entries(1, 2), None)
    s.save(HardState(1, "", 3), entries(3, 3), None)
    s.close()
    wal = tmp_path / "wal"
    size = wal.stat().st_size
    with open(wal, "r+b") as handle:  # a crash between write and fsync: the last batch is partial
        handle.truncate(size - cut)
    cut_open = reopen(tmp_path)
    _, _, got = cut_open.initial_state()
    assert [e.index for e in got] in ([1, 2], [1, 2, 3])
    cut_open.close()
    assert wal.stat().st_size < size
    again = reopen(tmp_path)  # the cut is durable and appends continue from the valid prefix
    again.save(None, entries(len(again.entries) + 1, 4), None)
    again.close()
    assert [e.index for e in reopen(tmp_path).entries] == [1, 2, 3, 4]


def test_corrupt_record_ends_the_log(tmp_path: Path) -> None:
    s = FileStorage(tmp_path)
    for i in range(1, 6):
        s.save(HardState(1, "", i - 1), entries(i, i), None)
    s.close()
    wal = tmp_path / "wal"
    blob = bytearray(wal.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # a flipped bit in the middle of the file
    wal.write_bytes(bytes(blob))
    _, _, got = reopen(tmp_path).initial_state()
    assert got and [e.index for e in got] == list(range(1, len(got) + 1)) and len(got) < 5
    assert all(e.data == f"cmd-{e.index}".encode() for e in got)


def test_random_cuts_always_yield_a_prefix(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    rng = random.Random(seed)
    s = FileStorage(tmp_path / "src")
    s.save(HardState(3, "b", 10), entries(1, 30, 3), None)
    s.close()
    image = (tmp_path / "src" / "wal").read_bytes()
    for trial in range(20):
        d = tmp_path / f"t{trial}"
        d.mkdir()
        (d / "wal").write_bytes(image[:rng.randrange(len(image))])
        _, _, got = FileStorage(d).initial_state()
        assert [e.index for e in got] == list(range(1, len(got) + 1)), f"seed={seed}"


def test_snapshot_truncates_the_log_and_survives_restart(tmp_path: Path) -> None:
    s = FileStorage(tmp_path)
    s.save(HardState(1, "x", 20), entries(1, 20), None)
    before = s.wal_bytes
    s.save_snapshot(Snapshot(15, 1, Membership.of(["x"]), b"state@15"))
    assert s.wal_bytes < before
    s.save(HardState(1, "x", 21), entries(21, 21), None)
    s.close()
    hard, snap, got = reopen(tmp_path).initial_state()
    assert snap is not None and snap.index == 15 and snap.data == b"state@15" and snap.membership.voters == ("x",)
    assert [e.index for e in got] == [16, 17, 18, 19, 20, 21] and hard.commit == 21


def test_crash_between_snapshot_and_wal_rewrite_keeps_the_longer_log(tmp_path: Path) -> None:
    s = FileStorage(tmp_path)
    s.save(HardState(1, "", 10), entries(1, 10), None)
    old_wal = (tmp_path / "wal").read_bytes()
    s.save_snapshot(Snapshot(6, 1, Membership.of(["x"]), b"s"))
    s.close()
    (tmp_path / "wal").write_bytes(old_wal)  # the rewrite never happened
    _, snap, got = reopen(tmp_path).initial_state()
    assert snap is not None and snap.index == 6 and [e.index for e in got] == [7, 8, 9, 10]


def test_received_snapshot_replaces_the_whole_log(tmp_path: Path) -> None:
    s = FileStorage(tmp_path)
    s.save(HardState(1, "", 3), entries(1, 8, 1), None)
    s.save(HardState(4, "", 50), [], Snapshot(50, 4, Membership.of(["a", "b"]), b"big"))
    s.save(None, entries(51, 52, 4), None)
    s.close()
    hard, snap, got = reopen(tmp_path).initial_state()
    assert snap is not None and (snap.index, snap.term) == (50, 4) and hard == HardState(4, "", 50)
    assert [e.index for e in got] == [51, 52]


def test_stale_wal_after_a_received_snapshot_is_dropped(tmp_path: Path) -> None:
    s = FileStorage(tmp_path)
    s.save(HardState(1, "", 3), entries(1, 8, 1), None)
    old_wal = (tmp_path / "wal").read_bytes()
    s.save(HardState(4, "", 5), [], Snapshot(5, 4, Membership.of(["a"]), b"s"))  # term 4 at index 5
    s.close()
    (tmp_path / "wal").write_bytes(old_wal)  # crash before the wal was reset
    _, snap, got = reopen(tmp_path).initial_state()
    assert snap is not None and got == []  # entries 6..8 of term 1 do not continue the snapshot


def test_corrupt_snapshot_refuses_to_start(tmp_path: Path) -> None:
    s = FileStorage(tmp_path)
    s.save(HardState(1, "", 2), entries(1, 2), None)
    s.save_snapshot(Snapshot(2, 1, Membership.of(["x"]), b"s"))
    s.close()
    snap = tmp_path / "snapshot"
    snap.write_bytes(snap.read_bytes()[:-1])
    with pytest.raises(StorageCorrupt):
        reopen(tmp_path)


def test_peers_json_recovery_appends_the_new_membership(tmp_path: Path) -> None:
    from agent.raft.core import RaftCore
    from agent.raft.storage import PeersFileError, recover_peers

    s = FileStorage(tmp_path)
    s.save(HardState(3, "", 2), [LogEntry(1, 1, EntryKind.CONFIG, Membership.of("abc").encode()), *entries(2, 4, 3)],
           None)
    peers = tmp_path / "peers.json"
    peers.write_text('[{"id": "a", "address": "10.0.0.1:8300"}, {"id": "d", "address": "10.0.0.4:8300",'
                     ' "non_voter": true}]')
    assert recover_peers(peers, s) == {"a": "10.0.0.1:8300", "d": "10.0.0.4:8300"}
    assert not peers.exists() and (tmp_path / "peers.json.applied").exists()
    s.close()
    core = RaftCore("a", reopen(tmp_path), random.Random(1))
    assert core.membership == Membership.of(["a"], ["d"])
    assert recover_peers(peers, reopen(tmp_path)) == {}  # applied once only
    peers.write_text('{"not": "a list"}')
    with pytest.raises(PeersFileError):
        recover_peers(peers, reopen(tmp_path))


def test_a_crash_with_the_wal_preallocated_replays_every_record(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    """The open wal is longer than its records (zeros reserved ahead); a crash leaves it so: replay
    stops at the zeros without calling them corrupt, and appends continue after the records."""
    s = FileStorage(tmp_path / "live")
    s.save(HardState(1, "a", 4), entries(1, 5), None)
    image = (tmp_path / "live" / "wal").read_bytes()  # what the disk holds at kill -9
    assert len(image) > s.wal_bytes and not any(image[s.wal_bytes:])
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    (crashed / "wal").write_bytes(image)
    with caplog.at_level("WARNING"):
        again = FileStorage(crashed)
    assert "corrupt" not in caplog.text
    assert [e.index for e in again.entries] == [1, 2, 3, 4, 5] and again.hard == HardState(1, "a", 4)
    again.save(None, entries(6, 6), None)
    again.close()
    assert [e.index for e in FileStorage(crashed).entries] == [1, 2, 3, 4, 5, 6]
