"""The state's parts (ctq.indb.state_parts / StateAssembler): pure, no server. The server-side use
of the same code is covered end to end by test_mop_equals_sequential (a state of many parts)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from ctq.indb import HEADER_PART, StateAssembler, assemble_state, encode_state, part_bounds, state_part, state_parts

ARRAYS = [np.arange(30, dtype=np.float32).reshape(5, 6), np.asarray(3, np.int64), np.zeros((0, 4), np.float32),
          np.linspace(-1, 1, 1001, dtype=np.float32)]


def test_parts_in_any_order_rebuild_the_arrays_and_none_is_larger_than_a_part():
    parts = list(state_parts(ARRAYS, hops=7, part_bytes=64))
    assert max(len(data) for index, _, data in parts if index != HEADER_PART) == 64
    assert parts[0][0] == HEADER_PART and json.loads(parts[0][2])["hops"] == 7
    got = {}
    assembler = StateAssembler([(a.dtype, a.shape) for a in ARRAYS], lambda i, a: got.setdefault(i, a.copy()))
    shuffled = parts[:]
    random.Random(3).shuffle(shuffled)
    for part in shuffled:
        assembler.add(*part)
    assembler.finish()
    assert assembler.hops == 7
    for i, want in enumerate(ARRAYS):
        assert got[i].dtype == want.dtype and np.array_equal(got[i], want)
    # each array is handed over once, the moment it is whole: never the whole state at once
    assert sorted(got) == list(range(len(ARRAYS)))


def test_a_part_by_its_number_is_the_part_streamed_in_that_place():
    """Greenplum stores a state one numbered part per row (ctq.state_part): part n must be the
    n-th the stream makes, and there are exactly as many as the stream makes."""
    bounds = part_bounds(ARRAYS, part_bytes=64)
    streamed = list(state_parts(ARRAYS, hops=2, part_bytes=64))
    assert len(streamed) == len(bounds) + 1
    for number in reversed(range(len(streamed))):  # any order: no part depends on the one before
        index, offset, data = state_part(ARRAYS, 2, number, bounds)
        assert (index, offset, bytes(data)) == (streamed[number][0], streamed[number][1], bytes(streamed[number][2]))
    for number in (-1, len(streamed)):
        with pytest.raises(IndexError, match=f"not a part {number}"):
            state_part(ARRAYS, 2, number, bounds)


def test_the_client_reads_parts_header_first_and_a_legacy_value():
    parts = sorted(state_parts(ARRAYS, part_bytes=100), key=lambda p: (p[0], p[1]))
    for got, want in zip(assemble_state(parts), ARRAYS, strict=True):
        assert np.array_equal(got, want)
    for got, want in zip(assemble_state([(-2, 0, encode_state(ARRAYS))]), ARRAYS, strict=True):
        assert np.array_equal(got, want)
    assert assemble_state([]) is None


def test_a_missing_part_or_another_layout_is_refused():
    parts = list(state_parts(ARRAYS, part_bytes=64))
    layout = [(a.dtype, a.shape) for a in ARRAYS]
    assembler = StateAssembler(layout)
    for part in parts[:-1]:
        assembler.add(*part)
    with pytest.raises(ValueError, match="incomplete"):
        assembler.finish()
    other = StateAssembler([(np.float32, (6, 5))] + layout[1:])
    with pytest.raises(ValueError):
        for part in parts:
            other.add(*part)
        other.finish()
    with pytest.raises(ValueError, match="the model has 3 arrays"):
        short = StateAssembler(layout[:3])
        for part in parts:
            short.add(*part)


def test_a_warm_start_takes_only_the_model_variables():
    """only_expected: another optimizer's arrays after the model's are skipped, not refused."""
    got = {}
    assembler = StateAssembler([(a.dtype, a.shape) for a in ARRAYS[:2]], lambda i, a: got.setdefault(i, a),
                               only_expected=True)
    for part in state_parts(ARRAYS, part_bytes=64):
        assembler.add(*part)
    assembler.finish()
    assert sorted(got) == [0, 1]


def test_a_state_file_is_read_back_whole_or_not_at_all(tmp_path):
    """A working state's file (working_states_files.sql) gives back its parts as written; a file cut
    short, with bytes after its last part, or written before the host's last boot (its boot id
    differs) gives nothing, so the model goes back to its checkpoint instead of training on it."""
    from ctq.indb import WORKING_STATE_MAGIC, read_state_file, write_state_file

    rng = np.random.default_rng(3)
    arrays = [rng.normal(size=(300, 70)).astype(np.float32), rng.normal(size=7), np.zeros((0,), np.float32)]
    path = tmp_path / "1.5"
    parts = list(state_parts(arrays, 5, part_bytes=4096))
    assert write_state_file(str(path), iter(parts)) == len(parts)
    assert [(i, o, bytes(d)) for i, o, d in read_state_file(str(path))] == [(i, o, bytes(d)) for i, o, d in parts]
    rebuilt = assemble_state(read_state_file(str(path)))
    assert all(np.array_equal(a, b) for a, b in zip(rebuilt, arrays))
    whole = path.read_bytes()
    for damaged in (whole[:-1], whole[: len(whole) // 2], whole + b"\0",
                    whole[: len(WORKING_STATE_MAGIC)] + b"0" * 36 + whole[len(WORKING_STATE_MAGIC) + 36:]):
        path.write_bytes(damaged)
        assert list(read_state_file(str(path))) == []
    assert list(read_state_file(str(tmp_path / "absent"))) == []


def test_a_stale_state_file_is_rewritten_in_place_unless_a_reader_holds_it(tmp_path):
    """A hop rewrites a stale file of its model in place (its pages cached, its blocks allocated)
    instead of making a new one; the result reads back whole even where the stale file was longer.
    A reader that is reading a stale file keeps its bytes: that file is not reused (a new one is
    written), and the reader gets the old state whole."""
    from ctq.indb import read_state_file, write_state_file

    rng = np.random.default_rng(4)
    old = [rng.normal(size=(200, 50)).astype(np.float32), rng.normal(size=9)]
    new = [rng.normal(size=(200, 50)).astype(np.float32), rng.normal(size=9)]
    stale, path = tmp_path / "1.10", tmp_path / "1.12"
    write_state_file(str(stale), state_parts(old, 10, part_bytes=4096))
    inode = stale.stat().st_ino
    write_state_file(str(path), state_parts(new, 9, part_bytes=4096), reuse=str(stale))  # a shorter header
    assert not stale.exists() and path.stat().st_ino == inode
    assert all(np.array_equal(a, b) for a, b in zip(assemble_state(read_state_file(str(path))), new))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.12"]

    write_state_file(str(stale), state_parts(old, 10, part_bytes=4096))
    reading = read_state_file(str(stale))
    first = next(reading)  # the reader has the file open, and its lock
    write_state_file(str(tmp_path / "1.13"), state_parts(new, 13, part_bytes=4096), reuse=str(stale))
    assert (tmp_path / "1.13").stat().st_ino != stale.stat().st_ino
    assert all(np.array_equal(a, b) for a, b in zip(assemble_state([first, *reading]), old))
    assert all(np.array_equal(a, b) for a, b in zip(assemble_state(read_state_file(str(tmp_path / "1.13"))), new))


def test_a_state_write_that_fails_leaves_no_file_and_a_full_disk_is_the_server_s(tmp_path, monkeypatch):
    """A working state written on a full disk: nothing of it stays taking space, and the error
    reaches the client as the server's resource shortage (SQLSTATE 53100: the hop retries, then
    the run stops resumable, exit 3), not as the model's failure (CTQ01: every model failed for
    good, a user trial). Other errors are still the model's."""
    import errno

    from ctq import indb

    def parts():
        yield 0, 0, b"header"
        raise OSError(errno.ENOSPC, "No space left on device")

    path = tmp_path / "7.3"
    with pytest.raises(OSError):
        indb.write_state_file(str(path), parts())
    assert list(tmp_path.iterdir()) == []

    class ServerError(Exception):
        pass

    class Plpy:  # what indb.call needs of PL/Python's plpy: its error(), as the server raises it
        SPIError = Error = ServerError

        @staticmethod
        def error(message, sqlstate):
            raise ServerError(sqlstate, message)

    def fails(plpy, error):
        raise error

    monkeypatch.setitem(indb._compile_cache, "root", None)  # call() points it at the cwd, as in a backend

    for error, sqlstate in ((OSError(errno.ENOSPC, "No space left on device"), "53100"),
                            (OSError(errno.EDQUOT, "Disk quota exceeded"), "53100"),
                            (OSError(errno.EMFILE, "Too many open files"), "53000"),
                            (OSError(errno.ENOENT, "No such file or directory"), indb.SQLSTATE_MODEL),
                            (ValueError("a model that cannot be built"), indb.SQLSTATE_MODEL)):
        with pytest.raises(ServerError) as raised:
            indb.call(Plpy, fails, error=error)
        assert raised.value.args[0] == sqlstate, (error, raised.value.args)
