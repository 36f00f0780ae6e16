"""The ckks scheme with real SEAL crypto: sums decrypt to plaintext sums, roles hold only what they should."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedgpu import crypto
from fedgpu.crypto import ckks_seal
from fedgpu.crypto.ckks import (
    PUBLIC_KEY_FILE,
    SECRET_KEY_FILE,
    CkksDecryptor,
    CkksEncryptor,
    CkksKeyPair,
)
from fedgpu.crypto.ckks_format import (
    DEFAULT_MODULUS,
    HEADER_BYTES,
    MAX_PAYLOAD_BYTES,
    CkksAdder,
    CkksParams,
)
from fedgpu.crypto.coefficients import compress, decompress, pack, unpack
from fedgpu.crypto.scheme import ChunkLayout
from fedgpu.errors import CryptoError, ProtocolError

REPO = Path(__file__).resolve().parents[2]
N = 4096
# The acceptance bound for 100 summed updates; fewer summands must do at least as well.
MAX_ERROR = 2e-6


@dataclass
class Roles:
    keys: CkksKeyPair
    encryptor: CkksEncryptor
    adder: CkksAdder
    decryptor: CkksDecryptor


@pytest.fixture(scope="module")
def roles() -> Roles:
    keys = CkksKeyPair.generate()
    return Roles(
        keys,
        CkksEncryptor(keys.params, keys.public_material),
        CkksAdder(keys.params),
        keys.decryptor(),
    )


def summed(adder: CkksAdder, payloads: list[bytes]) -> bytes:
    acc = adder.zero()
    for p in payloads:
        adder.check(p)
        acc = adder.add(acc, p)
    return adder.to_bytes(acc)


# --- numbers --------------------------------------------------------------------------------------


@settings(max_examples=12, deadline=None)
@given(
    nodes=st.integers(1, 4),
    length=st.integers(1, 3 * N),
    magnitude=st.sampled_from([1e-4, 1e-2, 1.0, 1e3]),
    seed=st.integers(0, 2**32 - 1),
)
def test_sum_of_encrypted_updates_decrypts_to_the_plain_sum(
    roles: Roles, nodes: int, length: int, magnitude: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    updates = [rng.uniform(-magnitude, magnitude, length) for _ in range(nodes)]
    total = summed(roles.adder, [roles.encryptor.encrypt(u) for u in updates])
    got = roles.decryptor.decrypt(total, length)
    assert got.dtype == np.float64 and got.shape == (length,)
    np.testing.assert_allclose(got, np.sum(updates, axis=0), rtol=0, atol=MAX_ERROR)


def test_hundred_updates_stay_within_the_error_budget(roles: Roles) -> None:
    rng = np.random.default_rng(7)
    updates = rng.normal(0.0, 1e-2, (100, N))
    total = summed(roles.adder, [roles.encryptor.encrypt(u) for u in updates])
    err = np.abs(roles.decryptor.decrypt(total, N) - updates.sum(axis=0)).max()
    assert err <= MAX_ERROR


def test_full_chunks_carry_weighted_sums_and_weights(roles: Roles) -> None:
    layout = ChunkLayout(num_params=roles.keys.values_per_chunk + 1000, values_per_chunk=roles.keys.values_per_chunk)
    rng = np.random.default_rng(3)
    updates = [rng.normal(0, 1e-2, layout.num_params) for _ in range(3)]
    weights = [1.0, 2.5, 0.5]
    per_chunk: list[list[bytes]] = [[] for _ in range(layout.num_chunks)]
    for u, w in zip(updates, weights, strict=True):
        for i, chunk in enumerate(layout.split(u, w)):
            payload = roles.encryptor.encrypt(chunk)
            assert len(payload) <= MAX_PAYLOAD_BYTES
            assert roles.adder.count(payload) == layout.chunk_values(i)
            per_chunk[i].append(payload)
    chunks = [
        roles.decryptor.decrypt(summed(roles.adder, ps), layout.chunk_values(i)) for i, ps in enumerate(per_chunk)
    ]
    weighted, chunk_weights = layout.join(chunks)
    np.testing.assert_allclose(weighted, sum(w * u for u, w in zip(updates, weights, strict=True)), atol=MAX_ERROR)
    np.testing.assert_allclose(chunk_weights, sum(weights), atol=MAX_ERROR)


@pytest.mark.parametrize("c0_bits, c1_bits", [(50, 56), (44, 52), (33, 41)])
def test_other_wire_widths_add_and_decrypt(c0_bits: int, c1_bits: int) -> None:
    """Byte-aligned and odd widths, including ones whose last 8-byte window reads past the payload."""
    keys = CkksKeyPair.generate(CkksParams(c0_bits=c0_bits, c1_bits=c1_bits))
    enc, add = CkksEncryptor(keys.params, keys.public_material), CkksAdder(keys.params)
    updates = np.random.default_rng(c0_bits).normal(0, 1e-2, (3, N + 7))
    total = summed(add, [enc.encrypt(u) for u in updates])
    # rounding step q / 2**bits, amplified ~sqrt(N/18) for c1 and ~sqrt(N/2) by decoding, over scale
    tolerance = 10 * 2.0 ** (60 - c1_bits) * 15 * 45 / 2**40 + 10 * 2.0 ** (60 - c0_bits) * 45 / 2**40 + MAX_ERROR
    np.testing.assert_allclose(keys.decryptor().decrypt(total, N + 7), updates.sum(axis=0), atol=tolerance)


def test_a_sum_of_one_is_the_payload_itself(roles: Roles) -> None:
    payload = roles.encryptor.encrypt(np.arange(10.0))
    assert roles.adder.to_bytes(roles.adder.add(roles.adder.zero(), payload)) == payload


def test_bytes_per_value_and_chunk_size_meet_the_targets(roles: Roles) -> None:
    p = CkksParams()
    assert p.payload_bytes(p.ciphertexts_per_chunk) <= MAX_PAYLOAD_BYTES
    full = roles.encryptor.encrypt(np.zeros(roles.keys.values_per_chunk))
    assert len(full) / roles.keys.values_per_chunk <= 16
    assert p.max_abs_sum >= 100 * 1e3  # 100 updates of |value| <= 1e3 sum without wrapping


def test_default_modulus_is_what_seal_picks() -> None:
    import tenseal.sealapi as seal

    assert seal.CoeffModulus.Create(N, [60])[0].value() == DEFAULT_MODULUS


# --- what each role holds -------------------------------------------------------------------------


_ADD_WITHOUT_TENSEAL = r"""
import importlib.abc, sys
from pathlib import Path

BLOCKED = ("tenseal", "_tenseal_cpp", "_sealapi_cpp")

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: the aggregator must not load SEAL")
        return None

sys.meta_path.insert(0, Block())
try:
    import tenseal
except ImportError:
    pass
else:
    raise SystemExit("the import blocker does not work")

from fedgpu import crypto

d = Path(sys.argv[1])
adder = crypto.adder("ckks", (d / "params").read_bytes())
acc = adder.zero()
for p in sorted(d.glob("payload-*")):
    data = p.read_bytes()
    adder.check(data)
    acc = adder.add(acc, data)
(d / "sum").write_bytes(adder.to_bytes(acc))
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
if loaded:
    raise SystemExit(f"loaded {loaded}")
"""


def test_the_aggregator_adds_without_tenseal(roles: Roles, tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    updates = [rng.normal(0, 1e-2, 5000) for _ in range(3)]
    (tmp_path / "params").write_bytes(roles.keys.params)
    for i, u in enumerate(updates):
        (tmp_path / f"payload-{i}").write_bytes(roles.encryptor.encrypt(u))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", _ADD_WITHOUT_TENSEAL, str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    got = roles.decryptor.decrypt((tmp_path / "sum").read_bytes(), 5000)
    np.testing.assert_allclose(got, np.sum(updates, axis=0), atol=MAX_ERROR)


def test_public_material_and_params_hold_no_secret_key(roles: Roles, tmp_path: Path) -> None:
    roles.keys.save(tmp_path)
    secret = (tmp_path / SECRET_KEY_FILE).read_bytes()
    body = secret[16:]  # past SEAL's header, which every SEAL object shares
    assert len(body) > 1000
    for shared in (roles.keys.public_material, roles.keys.params):
        assert body not in shared
        assert not any(body[i : i + 32] in shared for i in range(0, len(body) - 32, 512))
    assert len(roles.keys.params) < 64  # parameters only: no room for any key


def test_public_material_alone_cannot_decrypt(roles: Roles) -> None:
    with pytest.raises(CryptoError):
        CkksDecryptor(roles.keys.params, roles.keys.public_material)
    with pytest.raises(CryptoError):
        CkksDecryptor(roles.keys.params, roles.keys.params)


def test_another_key_pair_decrypts_to_garbage(roles: Roles) -> None:
    values = np.random.default_rng(5).normal(0, 1e-2, 2000)
    payload = roles.encryptor.encrypt(values)
    other = CkksKeyPair.generate().decryptor()
    assert np.abs(other.decrypt(payload, values.size) - values).max() > 1.0
    np.testing.assert_allclose(roles.decryptor.decrypt(payload, values.size), values, atol=MAX_ERROR)


def test_registry_builds_the_ckks_roles() -> None:
    keys = crypto.generate_keys("ckks")
    assert keys.scheme == "ckks" and isinstance(keys, CkksKeyPair)
    enc = crypto.encryptor("ckks", keys.params, keys.public_material)
    add = crypto.adder("ckks", keys.params)
    assert enc.values_per_chunk == keys.values_per_chunk
    payload = enc.encrypt(np.array([0.25, -0.5, 1.0]))
    total = add.to_bytes(add.add(add.add(add.zero(), payload), payload))
    np.testing.assert_allclose(keys.decryptor().decrypt(total, 3), [0.5, -1.0, 2.0], atol=MAX_ERROR)


# --- malformed input ------------------------------------------------------------------------------


def _with_byte(payload: bytes, index: int, value: int) -> bytes:
    b = bytearray(payload)
    b[index] = value
    return bytes(b)


def test_malformed_payloads_are_rejected(roles: Roles) -> None:
    good = roles.encryptor.encrypt(np.ones(100))
    roles.adder.check(good)
    bad_framing = {
        "truncated": good[:-1],
        "shorter than a header": good[:10],
        "one byte too many": good + b"\0",
        "wrong magic": b"XXXX" + good[4:],
        "wrong version": _with_byte(good, 4, 9),
        "reserved byte set": _with_byte(good, 5, 1),
        "two ciphertexts claimed": _with_byte(good, 6, 2),
        "zero ciphertexts": _with_byte(good, 6, 0),
        "more values than ciphertexts hold": good[:8] + (N + 1).to_bytes(4, "little") + good[12:],
        "zero values": good[:8] + (0).to_bytes(4, "little") + good[12:],
        "empty": b"",
    }
    for name, payload in bad_framing.items():
        with pytest.raises(ProtocolError):
            roles.adder.check(payload)
            pytest.fail(name)
        with pytest.raises(ProtocolError):
            roles.adder.add(roles.adder.zero(), payload)
    with pytest.raises(CryptoError):
        roles.adder.check(_with_byte(good, 12, good[12] ^ 1))  # params tag of another context


def test_payloads_of_other_parameters_are_rejected(roles: Roles) -> None:
    keys = CkksKeyPair.generate(CkksParams(c0_bits=50))
    foreign = CkksEncryptor(keys.params, keys.public_material).encrypt(np.ones(100))
    with pytest.raises(CryptoError):
        roles.adder.check(foreign)
    with pytest.raises(CryptoError):
        roles.decryptor.decrypt(foreign, 100)
    # c0_bits is ours, not SEAL's: that public key would load. One of another ring does not.
    bigger = CkksKeyPair.generate(CkksParams(poly_modulus_degree=8192, ciphertexts_per_chunk=9))
    for public in (bigger.public_material, b"not a key", roles.keys.public_material[:-100]):
        with pytest.raises(CryptoError):
            CkksEncryptor(roles.keys.params, public)


def test_sums_of_different_shapes_are_refused(roles: Roles) -> None:
    acc = roles.adder.add(roles.adder.zero(), roles.encryptor.encrypt(np.ones(5000)))
    with pytest.raises(ProtocolError):
        roles.adder.add(acc, roles.encryptor.encrypt(np.ones(100)))
    with pytest.raises(ProtocolError):
        roles.adder.to_bytes(roles.adder.zero())
    with pytest.raises(ProtocolError):
        roles.decryptor.decrypt(roles.adder.to_bytes(acc), 4999)
    with pytest.raises(ProtocolError):
        roles.adder.to_bytes(acc[:-1])


def test_every_coefficient_pattern_stays_below_q(roles: Roles) -> None:
    """Coefficients travel mod 2**bits, so no payload can carry one >= q: all-ones bits still load in SEAL."""
    good = roles.encryptor.encrypt(np.ones(100))
    all_ones = good[:HEADER_BYTES] + b"\xff" * (len(good) - HEADER_BYTES)
    roles.adder.check(all_ones)
    assert np.isfinite(roles.decryptor.decrypt(all_ones, 100)).all()


def test_encryptor_refuses_values_it_cannot_carry(roles: Roles) -> None:
    limit = CkksParams().max_abs_sum
    for values in (
        np.array([]),
        np.zeros(roles.keys.values_per_chunk + 1),
        np.array([1.0, np.nan]),
        np.array([np.inf]),
        np.array([2 * limit]),
    ):
        with pytest.raises(CryptoError):
            roles.encryptor.encrypt(values)


def test_parameters_are_validated() -> None:
    for bad in (b"", b"\0" * 20, CkksParams().to_bytes()[:-1]):
        with pytest.raises(CryptoError):
            CkksParams.from_bytes(bad)
    for kwargs in (
        {"c0_bits": 58},
        {"c1_bits": 32},
        {"poly_modulus_degree": 3000},
        {"modulus": DEFAULT_MODULUS + 2},
        {"ciphertexts_per_chunk": 19},
        {"ciphertexts_per_chunk": 0},
        {"scale_bits": 58},
    ):
        with pytest.raises(CryptoError):
            CkksParams(**kwargs)  # type: ignore[arg-type]
    assert CkksParams.from_bytes(CkksParams().to_bytes()) == CkksParams()


def test_seal_refuses_insecure_parameters() -> None:
    # A 60-bit modulus at N=2048 is below 128-bit security (SEAL allows 54 bits there).
    with pytest.raises(CryptoError):
        CkksKeyPair.generate(CkksParams(poly_modulus_degree=2048, ciphertexts_per_chunk=4))


# --- key files ------------------------------------------------------------------------------------


def test_save_writes_an_owner_only_secret_key_and_load_round_trips(roles: Roles, tmp_path: Path) -> None:
    roles.keys.save(tmp_path / "keys")
    assert stat.S_IMODE((tmp_path / "keys" / SECRET_KEY_FILE).stat().st_mode) == 0o600
    loaded = CkksKeyPair.load(tmp_path / "keys")
    assert (loaded.params, loaded.public_material) == (roles.keys.params, roles.keys.public_material)
    values = np.linspace(-1, 1, 300)
    np.testing.assert_allclose(loaded.decryptor().decrypt(roles.encryptor.encrypt(values), 300), values, atol=MAX_ERROR)
    roles.keys.save(tmp_path / "keys")  # overwriting keeps the mode
    assert stat.S_IMODE((tmp_path / "keys" / SECRET_KEY_FILE).stat().st_mode) == 0o600


def test_load_refuses_a_readable_secret_key_and_mixed_files(roles: Roles, tmp_path: Path) -> None:
    roles.keys.save(tmp_path / "a")
    os.chmod(tmp_path / "a" / SECRET_KEY_FILE, 0o644)
    with pytest.raises(CryptoError):
        CkksKeyPair.load(tmp_path / "a")
    os.chmod(tmp_path / "a" / SECRET_KEY_FILE, 0o600)
    CkksKeyPair.generate().save(tmp_path / "b")
    (tmp_path / "a" / PUBLIC_KEY_FILE).write_bytes((tmp_path / "b" / PUBLIC_KEY_FILE).read_bytes())
    with pytest.raises(CryptoError):
        CkksKeyPair.load(tmp_path / "a")


# --- the numpy pieces -----------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(bits=st.integers(33, 57), seed=st.integers(0, 2**32 - 1))
def test_modulus_switch_is_exact_and_packing_round_trips(bits: int, seed: int) -> None:
    q = DEFAULT_MODULUS
    rng = np.random.default_rng(seed)
    x = rng.integers(0, q, 64, dtype=np.uint64)
    x[:3] = [0, q - 1, q // 2]
    y = compress(x, q, bits)
    assert [int(v) for v in y] == [((int(v) << (bits + 1)) + q) // (2 * q) % (1 << bits) for v in x]
    back = decompress(y, q, bits)
    step = q / 2**bits
    assert all(min((int(a) - int(b)) % q, (int(b) - int(a)) % q) <= step / 2 + 1 for a, b in zip(back, x, strict=True))
    k, gap = q.bit_length(), (1 << q.bit_length()) - q
    expected = [((int(v) << (k - bits)) - ((int(v) * gap + (1 << (bits - 1))) >> bits)) % q for v in y]
    assert [int(v) for v in back] == expected
    packed = pack(y, bits)
    assert len(packed) == 64 * bits // 8
    assert np.array_equal(unpack(np.frombuffer(packed + bytes(8), np.uint8), 0, 64, bits), y)


def test_slow_coefficient_reads_give_the_same_result(roles: Roles, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ckks_seal, "_coefficient_address", lambda ct, count: None)
    enc = CkksEncryptor(roles.keys.params, roles.keys.public_material)
    values = np.random.default_rng(2).normal(0, 1, 50)
    np.testing.assert_allclose(roles.decryptor.decrypt(enc.encrypt(values), 50), values, atol=MAX_ERROR)


def test_combined_accumulators_decrypt_to_the_total() -> None:
    """Merging two cohort sums (as the aggregator does for a cohort below k) equals adding all payloads."""
    from fedgpu.crypto.ckks import CkksEncryptor, CkksKeyPair
    from fedgpu.crypto.ckks_format import CkksAdder

    keys = CkksKeyPair.generate()
    enc, add = CkksEncryptor(keys.params, keys.public_material), CkksAdder(keys.params)
    rng = np.random.default_rng(3)
    xs = [rng.normal(0, 0.1, 5000) for _ in range(4)]
    a = add.add(add.add(add.zero(), enc.encrypt(xs[0])), enc.encrypt(xs[1]))
    b = add.add(add.add(add.zero(), enc.encrypt(xs[2])), enc.encrypt(xs[3]))
    total = keys.decryptor().decrypt(add.to_bytes(add.combine(a, b)), 5000)
    np.testing.assert_allclose(total, sum(xs), atol=1e-6)
