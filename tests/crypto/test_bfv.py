"""The bfv8 bandwidth mode with real SEAL crypto: sums decrypt to the plaintext sums within the
quantisation bound, rounding is unbiased and seeded, the carry bound is enforced, roles hold only
what they should, and bad bytes are refused with fedgpu errors."""

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
from fedgpu.config import job_from_dict
from fedgpu.crypto.bfv import Bfv8Decryptor, Bfv8Encryptor, Bfv8KeyPair, dither_rng
from fedgpu.crypto.bfv_encoding import LaneEncoder
from fedgpu.crypto.bfv_format import HEADER_BYTES, PRESETS, Bfv8Adder, Bfv8Params, decode_payload
from fedgpu.crypto.ckks_format import MAX_PAYLOAD_BYTES
from fedgpu.crypto.coefficients import decompress
from fedgpu.crypto.scheme import ChunkLayout
from fedgpu.errors import ConfigError, CryptoError, FedgpuError, ProtocolError

REPO = Path(__file__).resolve().parents[2]
N = 4096
P = Bfv8Params()
STEP = P.step
# Weight slot: rounded to nearest at 2**-20 per summand.
WEIGHT_TOL = 2.0**-20


@dataclass
class Roles:
    keys: Bfv8KeyPair
    encryptor: Bfv8Encryptor
    adder: Bfv8Adder
    decryptor: Bfv8Decryptor


@pytest.fixture(scope="module")
def roles() -> Roles:
    keys = Bfv8KeyPair.generate()
    return Roles(keys, Bfv8Encryptor(keys.params, keys.public_material, seed=1), Bfv8Adder(keys.params), keys.decryptor())


@pytest.fixture(scope="module", params=sorted(PRESETS))
def preset(request: pytest.FixtureRequest) -> tuple[str, Roles]:
    """Each registered parameter set, with its roles."""
    keys = Bfv8KeyPair.generate(scheme=request.param)
    return request.param, Roles(keys, Bfv8Encryptor(keys.params, keys.public_material, seed=1), Bfv8Adder(keys.params), keys.decryptor())


def summed(adder: Bfv8Adder, payloads: list[bytes]) -> bytes:
    acc = adder.zero()
    for p in payloads:
        adder.check(p)
        acc = adder.add(acc, p)
    return adder.to_bytes(acc)


def chunk(values: np.ndarray, weight: float = 1.0) -> np.ndarray:
    """An update slice plus its weight slot, as ChunkLayout.split makes them."""
    return np.append(np.asarray(values, dtype=np.float64), weight)


# --- numbers --------------------------------------------------------------------------------------


@settings(max_examples=12, deadline=None)
@given(
    nodes=st.integers(1, 5),
    length=st.integers(1, 3 * N + 5),
    magnitude=st.sampled_from([1e-3, 1e-2, 0.3, 1.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_sum_of_encrypted_updates_is_the_plain_sum_within_the_quantisation_bound(
    roles: Roles, nodes: int, length: int, magnitude: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    updates = [rng.uniform(-magnitude, magnitude, length) for _ in range(nodes)]
    weights = rng.uniform(0.1, 50.0, nodes)
    total = summed(roles.adder, [roles.encryptor.encrypt(chunk(u, w)) for u, w in zip(updates, weights, strict=True)])
    got = roles.decryptor.decrypt(total, length + 1)
    assert got.dtype == np.float64 and got.shape == (length + 1,)
    # each summand's stochastic rounding is off by less than one step
    np.testing.assert_array_less(np.abs(got[:-1] - np.sum(updates, axis=0)), nodes * STEP)
    assert abs(got[-1] - weights.sum()) <= nodes * WEIGHT_TOL


def test_hundred_updates_stay_within_the_bound_and_near_sqrt_n_steps(roles: Roles) -> None:
    rng = np.random.default_rng(7)
    updates = rng.normal(0.0, 0.05, (100, N))
    total = summed(roles.adder, [roles.encryptor.encrypt(chunk(u)) for u in updates])
    err = roles.decryptor.decrypt(total, N + 1)[:-1] - updates.sum(axis=0)
    assert np.abs(err).max() < 100 * STEP
    # independent roundings: the error's spread is about sqrt(100 / 6) steps, far below the bound
    assert err.std() < 0.5 * np.sqrt(100) * STEP


def test_values_on_the_grid_sum_exactly_at_the_carry_bound(preset: tuple[str, Roles]) -> None:
    """Integers times the step need no rounding: max_summands of them (the largest sum allowed) decrypt
    exactly, including lanes that all sit at +-127 * max_summands, just short of overflowing."""
    _, r = preset
    p = r.encryptor.params
    rng = np.random.default_rng(3)
    ints = rng.integers(-p.levels, p.levels + 1, (p.max_summands, 2 * p.lanes * N - 10))
    ints[:, :9] = [p.levels, -p.levels, p.levels, -p.levels, -p.levels, p.levels, p.levels, p.levels, -p.levels]
    total = summed(r.adder, [r.encryptor.encrypt(chunk(i * p.step, 0.5)) for i in ints])
    got = r.decryptor.decrypt(total, ints.shape[1] + 1)
    assert np.array_equal(np.rint(got[:-1] / p.step).astype(np.int64), ints.sum(axis=0))
    assert got[-1] == 0.5 * p.max_summands


def test_full_chunks_carry_weighted_sums_and_weights(roles: Roles) -> None:
    vpc = roles.keys.values_per_chunk
    layout = ChunkLayout(num_params=vpc + 1000, values_per_chunk=vpc)
    rng = np.random.default_rng(3)
    updates = [rng.normal(0, 1e-2, layout.num_params) for _ in range(3)]
    weights = [1.0, 2.5, 0.5]
    per_chunk: list[list[bytes]] = [[] for _ in range(layout.num_chunks)]
    for u, w in zip(updates, weights, strict=True):
        for i, c in enumerate(layout.split(u, w)):
            payload = roles.encryptor.encrypt(c)
            assert len(payload) <= MAX_PAYLOAD_BYTES
            assert roles.adder.count(payload) == layout.chunk_values(i)
            per_chunk[i].append(payload)
    chunks = [roles.decryptor.decrypt(summed(roles.adder, ps), layout.chunk_values(i)) for i, ps in enumerate(per_chunk)]
    weighted, chunk_weights = layout.join(chunks)
    assert np.abs(weighted - sum(w * u for u, w in zip(updates, weights, strict=True))).max() < 3 * STEP
    np.testing.assert_array_equal(chunk_weights, sum(weights))  # 2**-20 fixed point holds these exactly


def test_stochastic_rounding_is_unbiased(roles: Roles) -> None:
    """The same update encrypted 100 times: round-to-nearest would be 30 steps off in every value
    (each sits 0.3 steps above a grid point), the seeded stochastic rounding averages out."""
    rng = np.random.default_rng(11)
    grid = rng.integers(-100, 100, 20_000)
    values = (grid + 0.3) * STEP
    total = summed(roles.adder, [roles.encryptor.encrypt(chunk(values)) for _ in range(100)])
    err_steps = (roles.decryptor.decrypt(total, values.size + 1)[:-1] - 100 * values) / STEP
    # per value: sum of 100 Bernoulli(0.3) - 30 has sd sqrt(21) = 4.6; over 20,000 values the mean's sd is 0.032
    assert abs(err_steps.mean()) < 0.15
    assert 4.0 < err_steps.std() < 5.2
    assert abs(np.median(np.abs(err_steps))) < 5


def test_rounding_is_unbiased_over_many_seeded_trials() -> None:
    """The encoder alone (no encryption), 400 seeded trials of values spread over all fractional offsets."""
    enc = LaneEncoder(P)
    values = chunk(np.linspace(-0.9, 0.9, 3001))
    errors = np.array([enc.decode(enc.encode(values, dither_rng(s))[0], values.size)[:-1] - values[:-1] for s in range(400)])
    assert np.abs(errors).max() < STEP
    per_value_mean = errors.mean(axis=0) / STEP  # each: mean of 400 draws of sd <= 0.5, so |.| < 0.1 at 4 sd
    assert np.abs(per_value_mean).max() < 0.1
    assert abs(per_value_mean.mean()) < 0.01


def test_the_seed_fixes_the_rounding_and_only_the_rounding(roles: Roles) -> None:
    values = chunk(np.random.default_rng(2).normal(0, 0.05, 5000))
    a = Bfv8Encryptor(roles.keys.params, roles.keys.public_material, seed=42).encrypt(values)
    b = Bfv8Encryptor(roles.keys.params, roles.keys.public_material, seed=42).encrypt(values)
    c = Bfv8Encryptor(roles.keys.params, roles.keys.public_material, seed=43).encrypt(values)
    assert a != b  # SEAL's encryption randomness is the OS's, never the task's seed
    da, db, dc = (roles.decryptor.decrypt(x, values.size) for x in (a, b, c))
    assert np.array_equal(da, db)
    assert not np.array_equal(da, dc)
    # the dither stream is not numpy's plain stream for that seed (which training might use)
    assert dither_rng(42).random() != np.random.default_rng(42).random()


def test_decryption_noise_stays_far_from_the_rounding_threshold(preset: tuple[str, Roles]) -> None:
    """Noise of a sum of max_summands fresh payloads, measured exactly with the secret key: decryption
    rounds it away while it stays below half a step of t. bfv8: sd 0.0085 sqrt(n) steps, 5.1 sd from
    the threshold at n = 128 (5.9 at n = 100); bfv8-32: about 7 sd at n = 32."""
    _, r = preset
    p, enc, add, dec = r.encryptor.params, r.encryptor, r.adder, r.decryptor
    q, t = p.modulus, p.plain_modulus
    # (0, round(q/t)) decrypts to the secret key's coefficients (ternary), which noise checks need
    probe = np.zeros(2 * N, dtype=np.uint64)
    probe[N] = round(q / t)
    s = dec._seal.decrypt(probe).astype(np.int64)
    s[s > t // 2] -= t
    assert set(np.unique(s)) <= {-1, 0, 1}
    rng = np.random.default_rng(0)
    ints = rng.integers(-p.levels, p.levels + 1, (p.max_summands, p.lanes * (N - 1)))
    total = summed(add, [enc.encrypt(chunk(i * p.step, 0.0)) for i in ints])
    _, y0, y1 = decode_payload(p, total)
    c0 = [int(v) for v in decompress(y0, q, p.c0_bits)]
    c1 = decompress(y1, q, p.c1_bits)
    c1s = [0] * (2 * N - 1)  # c1 * s as exact integers, through 3 limbs of 20 bits (each convolution fits int64)
    for limb in range(3):
        part = ((c1 >> np.uint64(20 * limb)) & np.uint64((1 << 20) - 1)).astype(np.int64)
        for k, v in enumerate(np.convolve(part, s)):
            c1s[k] += int(v) << (20 * limb)
    phase = [(c0[k] + c1s[k] - (c1s[k + N] if k + N < 2 * N - 1 else 0)) % q for k in range(N)]
    # the plaintext: lane sums times 2**(lane_bits * j), then the weight slot's coefficient (weight 0)
    shifts = 1 << np.arange(0, p.plain_bits, p.lane_bits)
    expected = [int(v) for v in (ints.sum(axis=0).reshape(-1, p.lanes) * shifts).sum(axis=1) % t] + [0]
    noise = []  # (t/q) * (c0 + c1 s) - m, centred, in steps of t: exact integer arithmetic, then one division
    for k in range(N):
        r_ = (phase[k] * t - expected[k] * q) % (t * q)
        noise.append((r_ - t * q if r_ > t * q // 2 else r_) / q)
    noise_arr = np.array(noise)
    sd = float(noise_arr.std())
    assert np.abs(noise_arr).max() < 0.5  # this sum decrypts exactly
    assert 0.5 / sd > 4.7, f"noise sd {sd:.4f} of a step: too close to the rounding threshold"


# --- the carry bound ------------------------------------------------------------------------------


def test_more_summands_than_the_carry_bound_are_refused(preset: tuple[str, Roles]) -> None:
    _, r = preset
    limit = r.encryptor.params.max_summands
    payload = r.encryptor.encrypt(chunk(np.ones(10) * 0.5))
    acc = r.adder.zero()
    for _ in range(limit):
        acc = r.adder.add(acc, payload)
    with pytest.raises(CryptoError, match=f"at most {limit} updates"):
        r.adder.add(acc, payload)
    assert decode_payload(r.encryptor.params, r.adder.to_bytes(acc))[0].summands == limit
    half = r.adder.zero()
    for _ in range(limit // 2 + 1):
        half = r.adder.add(half, payload)
    with pytest.raises(CryptoError, match=f"at most {limit} updates"):
        r.adder.combine(half.copy(), half)
    # a forged header claiming more summands than allowed is malformed; an upload is always one update
    forged = payload[:12] + (limit + 1).to_bytes(4, "little") + payload[16:]
    with pytest.raises(ProtocolError):
        r.adder.add(r.adder.zero(), forged)
    claims_two = payload[:12] + (2).to_bytes(4, "little") + payload[16:]
    with pytest.raises(ProtocolError, match="exactly one update"):
        r.adder.check(claims_two)
    r.adder.add(r.adder.zero(), claims_two)  # a sum may be added (it counts as two)
    sum_of_two = r.adder.to_bytes(r.adder.add(r.adder.add(r.adder.zero(), payload), payload))
    acc = r.adder.zero()
    for _ in range(limit // 2):
        acc = r.adder.add(acc, sum_of_two)  # sums count as what they hold
    with pytest.raises(CryptoError):
        r.adder.add(acc, payload)


def test_the_carry_bound_follows_from_the_lanes() -> None:
    assert P.max_summands * P.levels < 2 ** (P.lane_bits - 1)
    with pytest.raises(CryptoError):
        Bfv8Params(max_summands=130)
    assert Bfv8Params(lane_bits=13, max_summands=32).max_summands == 32
    with pytest.raises(CryptoError):
        Bfv8Params(lane_bits=13)  # 128 summands do not fit 13-bit lanes


def test_config_takes_bfv8_and_bounds_nodes_per_round_by_it() -> None:
    base = {"model": "cnn1d", "dataset": "mnist1d", "encryption": {"scheme": "bfv8"}}
    assert job_from_dict({**base, "nodes_per_round": 128}).encryption.scheme == "bfv8"
    with pytest.raises(ConfigError) as err:
        job_from_dict({**base, "nodes_per_round": 129})
    assert str(err.value).startswith("nodes_per_round") and "128" in str(err.value)
    with pytest.raises(ConfigError) as err:
        job_from_dict({**base, "encryption": {"scheme": "bfv9"}})
    assert str(err.value).startswith("encryption.scheme") and "bfv8" in str(err.value)
    assert job_from_dict({"model": "cnn1d", "dataset": "mnist1d", "nodes_per_round": 500}).encryption.scheme == "ckks"
    small = {**base, "encryption": {"scheme": "bfv8-32"}}
    assert job_from_dict({**small, "nodes_per_round": 32}).encryption.scheme == "bfv8-32"
    with pytest.raises(ConfigError, match="at most 32 updates"):
        job_from_dict({**small, "nodes_per_round": 33})


def test_encryptor_refuses_values_it_cannot_carry(roles: Roles) -> None:
    for values in (
        np.array([]),
        np.zeros(roles.keys.values_per_chunk + 1),
        np.array([1.0, np.nan, 1.0]),
        np.array([np.inf, 1.0]),
        chunk([0.1], 2 * P.max_weight),  # weight slot beyond what max_summands of them may sum to
    ):
        with pytest.raises(CryptoError):
            roles.encryptor.encrypt(values)


def test_values_beyond_the_clip_are_clipped_and_counted(roles: Roles) -> None:
    enc = Bfv8Encryptor(roles.keys.params, roles.keys.public_material, seed=0)
    payload = enc.encrypt(chunk([5.0, -5.0, 0.5]))
    assert enc.clipped == 2
    np.testing.assert_allclose(roles.decryptor.decrypt(payload, 4)[:2], [P.clip, -P.clip])


# --- bytes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme, most", [("bfv8", 4.6), ("bfv8-32", 4.0)])
def test_a_million_parameter_update_is_at_most_eight_bytes_per_parameter(scheme: str, most: float) -> None:
    keys = Bfv8KeyPair.generate(scheme=scheme)
    enc = Bfv8Encryptor(keys.params, keys.public_material, seed=0)
    layout = ChunkLayout(1_000_000, keys.values_per_chunk)
    update = np.random.default_rng(0).normal(0, 1e-2, layout.num_params)
    payloads = [enc.encrypt(c) for c in layout.split(update, 1.0)]
    per_param = sum(len(p) for p in payloads) / layout.num_params
    assert per_param <= 8.0
    assert per_param <= most  # (c0_bits + c1_bits) per 3 values, plus headers and the weight coefficients
    assert all(len(p) <= MAX_PAYLOAD_BYTES for p in payloads)
    params = PRESETS[scheme]
    assert params.payload_bytes(params.ciphertexts_per_chunk) <= MAX_PAYLOAD_BYTES


def test_a_sum_of_one_is_the_payload_itself(roles: Roles) -> None:
    payload = roles.encryptor.encrypt(chunk(np.arange(10.0) / 20))
    assert roles.adder.to_bytes(roles.adder.add(roles.adder.zero(), payload)) == payload


def test_combined_accumulators_decrypt_to_the_total(roles: Roles) -> None:
    rng = np.random.default_rng(3)
    xs = [rng.normal(0, 0.1, 5000) for _ in range(4)]
    enc, add = roles.encryptor, roles.adder
    a = add.add(add.add(add.zero(), enc.encrypt(chunk(xs[0]))), enc.encrypt(chunk(xs[1])))
    b = add.add(add.add(add.zero(), enc.encrypt(chunk(xs[2]))), enc.encrypt(chunk(xs[3])))
    total = add.to_bytes(add.combine(a, b))
    assert decode_payload(P, total)[0].summands == 4
    got = roles.decryptor.decrypt(total, 5001)
    assert np.abs(got[:-1] - sum(xs)).max() < 4 * STEP and got[-1] == 4.0


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
from fedgpu import crypto

d = Path(sys.argv[1])
adder = crypto.adder("bfv8", (d / "params").read_bytes())
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
        (tmp_path / f"payload-{i}").write_bytes(roles.encryptor.encrypt(chunk(u)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", _ADD_WITHOUT_TENSEAL, str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    got = roles.decryptor.decrypt((tmp_path / "sum").read_bytes(), 5001)
    assert np.abs(got[:-1] - np.sum(updates, axis=0)).max() < 3 * STEP


def test_public_material_and_params_hold_no_secret_key(roles: Roles, tmp_path: Path) -> None:
    roles.keys.save(tmp_path)
    body = (tmp_path / "bfv8.secret").read_bytes()[16:]  # past SEAL's header, which every SEAL object shares
    assert len(body) > 1000
    for shared in (roles.keys.public_material, roles.keys.params):
        assert not any(body[i : i + 32] in shared for i in range(0, len(body) - 32, 512))
    assert len(roles.keys.params) < 64  # parameters only: no room for any key


def test_public_material_alone_cannot_decrypt(roles: Roles) -> None:
    for not_a_secret in (roles.keys.public_material, roles.keys.params, b"garbage"):
        with pytest.raises(CryptoError):
            Bfv8Decryptor(roles.keys.params, not_a_secret)


def test_another_key_pair_decrypts_to_garbage(roles: Roles) -> None:
    values = chunk(np.random.default_rng(5).normal(0, 1e-2, 3000))
    payload = roles.encryptor.encrypt(values)
    other = Bfv8KeyPair.generate().decryptor()
    wrong = other.decrypt(payload, values.size)
    assert np.abs(wrong[:-1] - values[:-1]).max() > 10.0  # random lanes: up to 2**14 steps
    assert np.abs(roles.decryptor.decrypt(payload, values.size) - values).max() < STEP


def test_registry_builds_the_bfv8_roles_and_passes_the_seed() -> None:
    keys = crypto.generate_keys("bfv8")
    assert keys.scheme == "bfv8" and isinstance(keys, Bfv8KeyPair)
    assert crypto.max_summands("bfv8") == 128 and crypto.max_summands("ckks") is None
    small = crypto.generate_keys("bfv8-32")
    assert small.scheme == "bfv8-32" and crypto.max_summands("bfv8-32") == 32
    assert crypto.adder("bfv8-32", small.params).params.max_summands == 32  # type: ignore[attr-defined]
    values = chunk([0.25, -0.5, 0.3])
    decrypted = []
    for _ in range(2):
        enc = crypto.encryptor("bfv8", keys.params, keys.public_material, seed=7)
        assert enc.values_per_chunk == keys.values_per_chunk
        add = crypto.adder("bfv8", keys.params)
        payload = enc.encrypt(values)
        total = add.to_bytes(add.add(add.add(add.zero(), payload), payload))
        decrypted.append(keys.decryptor().decrypt(total, 4))
    assert np.array_equal(decrypted[0], decrypted[1])
    np.testing.assert_allclose(decrypted[0], 2 * values, atol=2 * STEP)
    # the other schemes take the seed and ignore it
    ckks = crypto.generate_keys("ckks")
    crypto.encryptor("ckks", ckks.params, ckks.public_material, seed=7)
    crypto.encryptor("none", crypto.generate_keys("none").params, b"", seed=7)


# --- malformed input ------------------------------------------------------------------------------


def _with_byte(payload: bytes, index: int, value: int) -> bytes:
    b = bytearray(payload)
    b[index] = value
    return bytes(b)


def test_malformed_payloads_are_rejected(roles: Roles) -> None:
    good = roles.encryptor.encrypt(chunk(np.ones(100) * 0.1))
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
        "more values than ciphertexts hold": good[:8] + (3 * N + 2).to_bytes(4, "little") + good[12:],
        "zero values": good[:8] + (0).to_bytes(4, "little") + good[12:],
        "zero summands": good[:12] + (0).to_bytes(4, "little") + good[16:],
        "empty": b"",
        "a ckks payload": b"FGCT" + good[4:],
    }
    for name, payload in bad_framing.items():
        with pytest.raises(ProtocolError):
            roles.adder.check(payload)
            pytest.fail(name)
        with pytest.raises(ProtocolError):
            roles.adder.add(roles.adder.zero(), payload)
    with pytest.raises(CryptoError):
        roles.adder.check(_with_byte(good, 16, good[16] ^ 1))  # params tag of another context


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200), prefix=st.booleans())
def test_random_bytes_never_crash_the_adder(roles: Roles, data: bytes, prefix: bool) -> None:
    payload = (roles.encryptor.encrypt(chunk([0.1]))[:HEADER_BYTES] + data) if prefix else data
    try:
        roles.adder.check(payload)
    except FedgpuError:
        return
    roles.adder.to_bytes(roles.adder.add(roles.adder.zero(), payload))  # well-formed: it adds


def test_payloads_of_other_parameters_are_rejected(roles: Roles) -> None:
    keys = Bfv8KeyPair.generate(Bfv8Params(clip=2.0))
    foreign = Bfv8Encryptor(keys.params, keys.public_material).encrypt(chunk(np.ones(100) * 0.1))
    with pytest.raises(CryptoError):
        roles.adder.check(foreign)
    with pytest.raises(CryptoError):
        roles.decryptor.decrypt(foreign, 101)
    ckks = crypto.generate_keys("ckks")
    for public in (ckks.public_material, b"not a key", roles.keys.public_material[:-100]):
        with pytest.raises(CryptoError):
            Bfv8Encryptor(roles.keys.params, public)


def test_sums_of_different_shapes_and_bad_accumulators_are_refused(roles: Roles) -> None:
    acc = roles.adder.add(roles.adder.zero(), roles.encryptor.encrypt(chunk(np.ones(5000) * 0.1)))
    with pytest.raises(ProtocolError):
        roles.adder.add(acc, roles.encryptor.encrypt(chunk(np.ones(100) * 0.1)))
    with pytest.raises(ProtocolError):
        roles.adder.to_bytes(roles.adder.zero())
    with pytest.raises(ProtocolError):
        roles.decryptor.decrypt(roles.adder.to_bytes(acc), 5000)
    for bad in (acc[:-1], acc.astype(np.int64), np.zeros(3, dtype=np.uint64)):
        with pytest.raises(ProtocolError):
            roles.adder.to_bytes(bad)
    with pytest.raises(ProtocolError):
        roles.adder.combine(acc.copy(), acc[:-1])


def test_every_coefficient_pattern_decrypts_to_finite_values(roles: Roles) -> None:
    good = roles.encryptor.encrypt(chunk(np.ones(100) * 0.1))
    all_ones = good[:HEADER_BYTES] + b"\xff" * (len(good) - HEADER_BYTES)
    roles.adder.check(all_ones)
    assert np.isfinite(roles.decryptor.decrypt(all_ones, 101)).all()


# --- parameters and keys --------------------------------------------------------------------------


def test_parameters_are_validated_and_round_trip() -> None:
    for bad in (b"", b"\0" * 33, P.to_bytes()[:-1], b"FGCP" + P.to_bytes()[4:]):
        with pytest.raises(CryptoError):
            Bfv8Params.from_bytes(bad)
    for kwargs in (
        {"c0_bits": 58},
        {"c1_bits": 46},
        {"poly_modulus_degree": 3000},
        {"modulus": P.modulus + 2},
        {"ciphertexts_per_chunk": 18},
        {"ciphertexts_per_chunk": 0},
        {"clip": 0.0},
        {"clip": float("nan")},
        {"quant_bits": 15},
        {"lanes": 4},  # 60-bit plaintext leaves no room for noise
        {"weight_bits": 41},
    ):
        with pytest.raises(CryptoError):
            Bfv8Params(**kwargs)  # type: ignore[arg-type]
    assert Bfv8Params.from_bytes(P.to_bytes()) == P
    assert Bfv8Params.from_bytes(Bfv8Params(clip=0.25).to_bytes()).clip == 0.25


def test_seal_refuses_insecure_parameters() -> None:
    # A 60-bit modulus at N=2048 is below 128-bit security (SEAL allows 54 bits there).
    with pytest.raises(CryptoError):
        Bfv8KeyPair.generate(Bfv8Params(poly_modulus_degree=2048, ciphertexts_per_chunk=4))


def test_save_writes_an_owner_only_secret_key_and_load_round_trips(roles: Roles, tmp_path: Path) -> None:
    roles.keys.save(tmp_path / "keys")
    assert stat.S_IMODE((tmp_path / "keys" / "bfv8.secret").stat().st_mode) == 0o600
    loaded = Bfv8KeyPair.load(tmp_path / "keys")
    assert (loaded.params, loaded.public_material) == (roles.keys.params, roles.keys.public_material)
    values = chunk(np.linspace(-1, 1, 300))
    assert np.abs(loaded.decryptor().decrypt(roles.encryptor.encrypt(values), 301) - values).max() < STEP
    os.chmod(tmp_path / "keys" / "bfv8.secret", 0o644)
    with pytest.raises(CryptoError):
        Bfv8KeyPair.load(tmp_path / "keys")
    os.chmod(tmp_path / "keys" / "bfv8.secret", 0o600)
    Bfv8KeyPair.generate().save(tmp_path / "other")
    (tmp_path / "keys" / "bfv8.public").write_bytes((tmp_path / "other" / "bfv8.public").read_bytes())
    with pytest.raises(CryptoError):
        Bfv8KeyPair.load(tmp_path / "keys")
    small = Bfv8KeyPair.generate(scheme="bfv8-32")
    small.save(tmp_path / "small")
    assert (tmp_path / "small" / "bfv8-32.secret").exists()
    assert Bfv8KeyPair.load(tmp_path / "small", "bfv8-32").params == small.params


@settings(max_examples=30, deadline=None)
@given(nodes=st.integers(1, 128), length=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
def test_lane_sums_decode_exactly_while_inside_the_carry_bound(nodes: int, length: int, seed: int) -> None:
    """Encoder arithmetic alone: the sum mod t of encoded integer vectors decodes to their sum."""
    enc = LaneEncoder(P)
    rng = np.random.default_rng(seed)
    ints = rng.integers(-P.levels, P.levels + 1, (nodes, length))
    ints[:, 0] = rng.choice([-P.levels, P.levels])  # one value at the extreme in every summand
    coefficients = sum(enc.encode(chunk(i * STEP), rng)[0] for i in ints) % np.uint64(P.plain_modulus)
    got = enc.decode(coefficients, length + 1)
    assert np.array_equal(np.rint(got[:-1] / STEP).astype(np.int64), ints.sum(axis=0))
    assert got[-1] == nodes
