"""Encryptions of zero made ahead (fedgpu.crypto.zero_pool): each used once, correct sums, stoppable."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from fedgpu import crypto
from fedgpu.crypto.zero_pool import ZeroPool


def _wait_for(pool: ZeroPool, size: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while len(pool) < size:
        assert time.monotonic() < deadline, f"the pool reached {len(pool)} of {size}"
        time.sleep(0.01)


@pytest.mark.parametrize("scheme", ["ckks", "bfv8"])
def test_a_sum_of_updates_encrypted_from_the_pool_decrypts(scheme: str) -> None:
    keys = crypto.generate_keys(scheme)
    pool = crypto.zero_pool(scheme, keys.params, keys.public_material)
    assert pool is not None
    # an empty pool makes encryptions of zero on demand and counts them for its next refill
    crypto.encryptor(scheme, keys.params, keys.public_material, zeros=pool).encrypt(np.ones(5))
    assert pool.drawn >= 1 and pool.hits == 0
    pool.refill(target=4)
    _wait_for(pool, 4)
    assert pool.drawn == 0
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1e-2, 3000), rng.normal(0, 1e-2, 3000)
    first = crypto.encryptor(scheme, keys.params, keys.public_material, seed=1, zeros=pool).encrypt(a)
    second = crypto.encryptor(scheme, keys.params, keys.public_material, seed=2, zeros=pool).encrypt(b)
    assert pool.hits == min(4, pool.drawn) == pool.used_ahead and pool.made_ahead == 4
    add = crypto.adder(scheme, keys.params)
    total = add.to_bytes(add.add(add.add(add.zero(), first), second))
    atol = 1e-5 if scheme == "ckks" else 2 * 2 * 0.5 / 127  # bfv8: under a quantisation step per update
    np.testing.assert_allclose(keys.decryptor().decrypt(total, a.size), a + b, atol=atol)


def test_no_encryption_of_zero_is_handed_out_twice() -> None:
    keys = crypto.generate_keys("ckks")
    pool = crypto.zero_pool("ckks", keys.params, keys.public_material)
    assert pool is not None
    pool.refill(target=6)
    _wait_for(pool, 6)
    n = 4096
    seen = set()
    for _ in range(8):  # 6 from the pool, then 2 made on demand
        c0, c1 = np.empty(n, np.uint64), np.empty(n, np.uint64)
        pool.encrypt_zero(c0, c1)
        seen.add(c1.tobytes())
    assert len(seen) == 8 and len(pool) == 0
    # the same values encrypted twice travel as different ciphertexts (fresh randomness each time)
    enc = crypto.encryptor("ckks", keys.params, keys.public_material, zeros=pool)
    pool.refill(target=2)
    _wait_for(pool, 2)
    assert enc.encrypt(np.ones(10)) != enc.encrypt(np.ones(10))


class _SlowSource:
    """Counts the encryptions of zero asked of it; each takes 5 ms."""

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def encrypt_zero(self, c0: np.ndarray, c1: np.ndarray) -> None:
        time.sleep(0.005)
        with self.lock:
            self.calls += 1
        c0[:] = self.calls
        c1[:] = self.calls


def test_pause_stops_the_filling_and_refill_makes_what_was_drawn() -> None:
    source = _SlowSource()
    pool = ZeroPool(source, degree=8)
    pool.refill(target=10_000)
    _wait_for(pool, 3)
    pool.pause()
    stopped_at = source.calls
    time.sleep(0.05)
    assert source.calls == stopped_at < 10_000  # nothing is made once pause returns
    assert not any(t.name == "zero-pool" for t in threading.enumerate())

    c0, c1 = np.empty(8, np.uint64), np.empty(8, np.uint64)
    for _ in range(len(pool) + 2):  # drains the pool, then two on demand
        pool.encrypt_zero(c0, c1)
    assert len(pool) == 0 and source.calls == stopped_at + 2
    pool.refill()  # as many as were drawn since the last refill
    drawn = stopped_at + 2
    _wait_for(pool, drawn)
    pool.pause()
    assert len(pool) == drawn


def test_the_pool_is_capped_by_its_memory_budget() -> None:
    pool = ZeroPool(_SlowSource(), degree=8, max_bytes=5 * 2 * 8 * 8)  # room for 5
    pool.refill(target=100)
    _wait_for(pool, 5)
    time.sleep(0.05)
    pool.pause()
    assert len(pool) == 5


def test_the_plain_scheme_has_no_pool() -> None:
    keys = crypto.generate_keys("none")
    assert crypto.zero_pool("none", keys.params, keys.public_material) is None
