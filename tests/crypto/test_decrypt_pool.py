"""Decryption in worker processes gives what the driver's own decryptor gives, bit for bit, errors included,
and leaves no process behind; the reused in-place ciphertext decrypts as SEAL's file load did."""

from __future__ import annotations

import math
import os
import signal
from concurrent.futures import CancelledError
from pathlib import Path

import numpy as np
import pytest

from fedgpu import crypto
from fedgpu.config import JobConfig
from fedgpu.crypto.ckks import CkksKeyPair
from fedgpu.crypto.ckks_format import CkksAdder, CkksParams, decode_payload, encode_payload
from fedgpu.crypto.coefficients import decompress
from fedgpu.crypto.decrypt_pool import MIN_CHUNKS, DecryptPool, workers_for
from fedgpu.driver.sums import check_sums, decrypt_sums
from fedgpu.errors import CryptoError, ProtocolError

# small ciphertexts per chunk, so that a sum of several chunks stays quick
PARAMS = CkksParams(ciphertexts_per_chunk=2)
NUM_PARAMS = 3 * PARAMS.values_per_chunk + 100  # four chunks, the last one short


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[CkksKeyPair, Path]:
    pair = CkksKeyPair.generate(PARAMS)
    directory = tmp_path_factory.mktemp("driver") / "keys"
    pair.save(directory)
    return pair, directory


def cohort_sum(pair: CkksKeyPair, layout: crypto.ChunkLayout, seed: int, members: int = 3) -> list[bytes]:
    """A real cohort sum: ``members`` encrypted updates added by the aggregator's adder."""
    rng = np.random.default_rng(seed)
    enc = crypto.encryptor("ckks", pair.params, pair.public_material)
    adder = CkksAdder(pair.params)
    accs = [adder.zero() for _ in range(layout.num_chunks)]
    for _ in range(members):
        for i, chunk in enumerate(layout.split(rng.normal(0, 0.01, layout.num_params), 1.0)):
            accs[i] = adder.add(accs[i], enc.encrypt(chunk))
    return [adder.to_bytes(a) for a in accs]


def garbage(pair: CkksKeyPair, layout: crypto.ChunkLayout, seed: int) -> list[bytes]:
    """Well-formed payloads of random coefficients: they decrypt, to nonsense."""
    rng = np.random.default_rng(seed)
    p = CkksParams.from_bytes(pair.params)
    out = []
    for i in range(layout.num_chunks):
        count = math.ceil(layout.chunk_values(i) / p.values_per_ciphertext) * p.poly_modulus_degree
        c0 = rng.integers(0, 2**p.c0_bits, count, dtype=np.uint64)
        c1 = rng.integers(0, 2**p.c1_bits, count, dtype=np.uint64)
        out.append(encode_payload(p, layout.chunk_values(i), c0, c1))
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return "State:\tZ" not in fh.read()
    except FileNotFoundError:
        return False


def test_pool_sums_are_bit_identical_to_serial_and_garbage_drops_only_its_cohort(keys: tuple[CkksKeyPair, Path]) -> None:
    pair, directory = keys
    layout = crypto.ChunkLayout(NUM_PARAMS, pair.values_per_chunk)
    job = JobConfig(name="t", model="digits_cnn", dataset="digits", nodes_per_round=9, min_nodes=9, cohort_size=3).validate()
    by_cohort = {0: (["a", "b", "c"], cohort_sum(pair, layout, 0)), 1: (["d", "e", "f"], garbage(pair, layout, 1)), 2: (["g", "h", "i"], cohort_sum(pair, layout, 2))}
    serial, serial_dropped = decrypt_sums(by_cohort, pair.decryptor(), layout, pair, job, "test")
    pool = DecryptPool("ckks", directory, pair.decryptor(), workers=2)
    try:
        pids = pool.pids
        lazy = {ci: (m, [pool.submit(p, layout.chunk_values(i)) for i, p in enumerate(parts)]) for ci, (m, parts) in by_cohort.items()}
        parallel, parallel_dropped = check_sums(lazy, layout, pair, job, "test")
    finally:
        pool.close()
    assert [s.cohort for s in serial] == [s.cohort for s in parallel] == [0, 2]
    for a, b in zip(serial, parallel, strict=True):
        assert a.members == b.members
        assert np.array_equal(a.weighted, b.weighted) and np.array_equal(a.weights, b.weights)
    assert [d.to_dict() for d in serial_dropped] == [d.to_dict() for d in parallel_dropped]
    assert [d.cohort for d in parallel_dropped] == [1]
    assert len(pids) == 2 and not any(alive(p) for p in pids)


def test_a_malformed_chunk_raises_in_the_driver_as_serial_decryption_does(keys: tuple[CkksKeyPair, Path]) -> None:
    pair, directory = keys
    layout = crypto.ChunkLayout(NUM_PARAMS, pair.values_per_chunk)
    good = cohort_sum(pair, layout, 3, members=1)[0]
    dec = pair.decryptor()
    with pytest.raises(ProtocolError) as serial:
        dec.decrypt(good, layout.chunk_values(0) - 1)
    with pytest.raises(CryptoError) as serial_tag:
        dec.decrypt(good[:16] + b"\0" * 8 + good[24:], layout.chunk_values(0))
    pool = DecryptPool("ckks", directory, dec, workers=1)
    try:
        with pytest.raises(ProtocolError) as parallel:
            pool.submit(good, layout.chunk_values(0) - 1)()
        with pytest.raises(CryptoError) as parallel_tag:
            pool.submit(good[:16] + b"\0" * 8 + good[24:], layout.chunk_values(0))()
        assert np.array_equal(pool.submit(good, layout.chunk_values(0))(), dec.decrypt(good, layout.chunk_values(0)))  # the worker goes on
    finally:
        pool.close()
    assert type(parallel.value) is type(serial.value) and str(parallel.value) == str(serial.value)
    assert type(parallel_tag.value) is type(serial_tag.value) and str(parallel_tag.value) == str(serial_tag.value)


def test_a_lost_worker_costs_only_time(keys: tuple[CkksKeyPair, Path]) -> None:
    pair, directory = keys
    layout = crypto.ChunkLayout(NUM_PARAMS, pair.values_per_chunk)
    parts = cohort_sum(pair, layout, 4, members=1)
    dec = pair.decryptor()
    pool = DecryptPool("ckks", directory, dec, workers=1)
    try:
        first = pool.submit(parts[0], layout.chunk_values(0))()
        os.kill(pool.pids[0], signal.SIGKILL)
        rest = [pool.submit(p, layout.chunk_values(i))() for i, p in enumerate(parts)]
    finally:
        pool.close()
    assert np.array_equal(first, rest[0])
    for i, values in enumerate(rest):
        assert np.array_equal(values, dec.decrypt(parts[i], layout.chunk_values(i)))


def test_cancel_drops_what_no_worker_started(keys: tuple[CkksKeyPair, Path]) -> None:
    pair, directory = keys
    layout = crypto.ChunkLayout(NUM_PARAMS, pair.values_per_chunk)
    parts = cohort_sum(pair, layout, 5, members=1)
    pool = DecryptPool("ckks", directory, pair.decryptor(), workers=1)
    try:
        queued = [pool.submit(parts[0], layout.chunk_values(0)) for _ in range(20)]
        pool.cancel()
        after = pool.submit(parts[1], layout.chunk_values(1))()  # not stuck behind the cancelled ones
        with pytest.raises(CancelledError):
            queued[-1]()
    finally:
        pool.close()
    assert np.array_equal(after, pair.decryptor().decrypt(parts[1], layout.chunk_values(1)))


def test_workers_only_where_there_is_enough_to_decrypt_and_a_core_to_spare() -> None:
    assert workers_for("ckks", MIN_CHUNKS, cpus=2) == 2
    assert workers_for("bfv8", 14, cpus=16) == 4
    assert workers_for("ckks", 14, cpus=1) == 0
    assert workers_for("ckks", MIN_CHUNKS - 1, cpus=8) == 0  # a 28 k-parameter model decrypts in the driver
    assert workers_for("none", 14, cpus=8) == 0


def test_in_place_ciphertext_decrypts_as_the_file_load_did(keys: tuple[CkksKeyPair, Path]) -> None:
    pair, _ = keys
    layout = crypto.ChunkLayout(NUM_PARAMS, pair.values_per_chunk)
    payload = cohort_sum(pair, layout, 6, members=2)[0]
    dec = pair.decryptor()
    seal = dec._seal
    assert seal._address is not None  # the layout check passes on this SEAL build
    p = dec.params
    n = p.poly_modulus_degree
    _, y0, y1 = decode_payload(p, payload)
    c0 = decompress(y0, p.modulus, p.c0_bits).reshape(-1, n)
    c1 = decompress(y1, p.modulus, p.c1_bits).reshape(-1, n)
    address = seal._address
    for i in range(c0.shape[0]):
        both = np.concatenate((c0[i], c1[i]))
        fast = seal.decrypt(both)
        seal._address = None  # the file path, as every ciphertext went before
        try:
            slow = seal.decrypt(both)
        finally:
            seal._address = address
        assert np.array_equal(fast, slow)
    too_big = np.concatenate((c0[0], c1[0]))
    too_big[5] = p.modulus
    with pytest.raises(CryptoError, match="below q"):
        seal.decrypt(too_big)
