"""Released sums as files: written whole or not at all, read back chunk by chunk, dropped and swept."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fedgpu import crypto
from fedgpu.aggregator.released import DIGEST_ATTR, ReleasedSums, keep_digest
from fedgpu.errors import NotFoundError


def test_a_round_written_with_bytes_and_moved_files_reads_back_in_order(tmp_path: Path) -> None:
    sums = ReleasedSums(tmp_path / "released")
    spooled = tmp_path / "c0-1.raw"
    spooled.write_bytes(b"\x00c0k1")
    sums.write("job-1", 1, "att", iter([(1, 0, b"c1k0"), (0, 1, spooled), (0, 0, b"c0k0")]))
    assert not spooled.exists()  # moved in, not copied
    assert sums.index("job-1", 1, "att") == [(0, 0), (0, 1), (1, 0)]
    assert sums.read("job-1", 1, "att", 0, 1)[0] == b"\x00c0k1" and sums.read("job-1", 1, "att", 1, 0)[0] == b"c1k0"
    with pytest.raises(NotFoundError):
        sums.read("job-1", 1, "att", 2, 0)


def test_a_write_that_fails_midway_leaves_nothing_and_keeps_what_was_there(tmp_path: Path) -> None:
    sums = ReleasedSums(tmp_path / "released")
    sums.write("job-1", 1, "att", iter([(0, 0, b"first")]))

    def failing() -> Iterator[tuple[int, int, bytes]]:
        yield (0, 0, b"second")
        raise OSError("the spool's file vanished")

    with pytest.raises(OSError):
        sums.write("job-1", 1, "att", failing())
    assert sums.read("job-1", 1, "att", 0, 0)[0] == b"first"
    with pytest.raises(OSError):
        sums.write("job-1", 2, "att", failing())
    assert sorted(p.name for p in sums.root.iterdir()) == ["job-1-r1-att"]  # no half-written folder


def test_drop_and_sweep_delete_exactly_what_no_ready_round_names(tmp_path: Path) -> None:
    sums = ReleasedSums(tmp_path / "released")
    for job, rnd, att in [("job-a", 1, "x"), ("job-a", 2, "y"), ("job-a", 12, "z"), ("job-b", 1, "x")]:
        sums.write(job, rnd, att, iter([(0, 0, b"s")]))
    (sums.root / ".tmp-job-b-r2-q").mkdir()  # a close killed before its rename
    sums.drop("job-a", [1])
    assert sorted(p.name for p in sums.root.iterdir() if not p.name.startswith(".")) == ["job-a-r12-z", "job-a-r2-y", "job-b-r1-x"]
    assert sums.sweep({"job-a-r2-y", "job-b-r1-x"}) == [".tmp-job-b-r2-q", "job-a-r12-z"]
    sums.drop("job-b")
    assert [p.name for p in sums.root.iterdir()] == ["job-a-r2-y"]


@pytest.mark.parametrize("scheme", ["ckks", "bfv8", "none"])
def test_a_sum_of_one_payload_is_the_payload_exactly_where_the_scheme_says_so(scheme: str) -> None:
    """What lets a cohort of one release its spooled file without decoding it (Adder.sum_is_payload)."""
    keys = crypto.generate_keys(scheme)
    enc = crypto.encryptor(scheme, keys.params, keys.public_material, seed=3)
    add = crypto.adder(scheme, keys.params)
    for size in (5, enc.values_per_chunk):
        payload = enc.encrypt(np.random.default_rng(size).normal(0, 0.1, size))
        assert (add.to_bytes(add.add(add.zero(), payload)) == payload) is add.sum_is_payload


def test_a_moved_file_is_served_with_the_digest_kept_with_it_and_others_are_hashed(tmp_path: Path) -> None:
    sums = ReleasedSums(tmp_path / "released")
    spooled = tmp_path / "c0-0.raw"
    spooled.write_bytes(b"lone update")
    kept = hashlib.sha256(b"what the node sent").digest()  # not the file's: shows it is served, not recomputed
    keep_digest(spooled, kept)
    if DIGEST_ATTR not in os.listxattr(spooled):
        pytest.skip("this file system keeps no extended attributes (the reader hashes; the other case covers it)")
    sums.write("job-1", 1, "att", iter([(0, 0, spooled), (1, 0, b"a sum")]))
    assert sums.read("job-1", 1, "att", 0, 0) == (b"lone update", kept)  # the rename carried it along
    assert sums.read("job-1", 1, "att", 1, 0) == (b"a sum", hashlib.sha256(b"a sum").digest())
    keep_digest(sums.folder("job-1", 1, "att") / "0-0.sum", b"short")  # not a digest: hashed instead
    assert sums.read("job-1", 1, "att", 0, 0) == (b"lone update", hashlib.sha256(b"lone update").digest())
