"""Benchmark the ckks scheme and the bfv8 bandwidth mode on one model-sized update, against the
plaintext float32 sum measured in the same run.

Prints one JSON object: ckks's figures at the top level, bfv8's under ``bandwidth`` (the same keys),
the float32 sum under ``baseline``. Every update is chunked with fedgpu's ChunkLayout (weight slot
included), as a node would send it. ``encrypt_seconds_made_ahead``: the same encryption when the
node made its encryptions of zero ahead, while waiting for the task (fedgpu.crypto.zero_pool).
Summands are distinct encryptions unless ``--distinct`` asks for fewer, in which case payloads are reused cyclically; reuse makes their noise add coherently (and
repeats bfv8's roundings), so errors then read pessimistic (the JSON says how many were distinct).

bfv8's error is in absolute units and scales with its clip (one step is clip / 127): the JSON also
gives it in steps. ``bandwidth["bfv8-32"]`` is the smaller preset, summed to its limit of 32.

    python scripts/bench_crypto.py                 # 1,000,000 parameters, 100 summands
    python scripts/bench_crypto.py --params 100000 --distinct 20
    python scripts/bench_crypto.py --clip 0.08     # bfv8 clipped at 8 sd of these updates
"""

from __future__ import annotations

import os

# Single-core figures: keep any BLAS/FFT pool to one thread (SEAL runs single-threaded as called).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402

import numpy as np  # noqa: E402

from fedgpu import crypto  # noqa: E402
from fedgpu.crypto.bfv import Bfv8Encryptor, Bfv8KeyPair  # noqa: E402
from fedgpu.crypto.bfv_format import PRESETS, Bfv8Adder, Bfv8Params  # noqa: E402
from fedgpu.crypto.ckks import CkksEncryptor, CkksKeyPair  # noqa: E402
from fedgpu.crypto.ckks_format import CkksAdder  # noqa: E402
from fedgpu.crypto.plain import PlainAdder, PlainDecryptor, PlainEncryptor  # noqa: E402
from fedgpu.crypto.scheme import Adder, ChunkLayout, KeyPair  # noqa: E402


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def run_scheme(
    name: str,
    layout: ChunkLayout,
    encrypt: Callable[[np.ndarray], bytes],
    adder: Adder,
    decrypt: Callable[[bytes, int], np.ndarray],
    updates: Callable[[int], np.ndarray],
    summands: int,
    distinct: int,
    checkpoints: Sequence[int],
) -> dict[str, float | int | str]:
    """Encrypt ``distinct`` updates, add ``summands`` of them chunk by chunk, decrypt at each checkpoint."""
    enc_times: list[float] = []
    add_times: list[float] = []
    acc: list[np.ndarray] = [adder.zero() for _ in range(layout.num_chunks)]
    exact_sum = np.zeros(layout.num_params, dtype=np.float64)
    kept: list[list[bytes]] = []
    wire_bytes = max_payload = 0
    out: dict[str, float | int | str] = {"scheme": name}
    for s in range(summands):
        update = updates(s % distinct)
        if s < distinct:
            chunks = list(layout.split(update, 1.0))
            start = time.perf_counter()
            payloads = [encrypt(c) for c in chunks]
            enc_times.append(time.perf_counter() - start)
            wire_bytes = sum(len(p) for p in payloads)
            max_payload = max(len(p) for p in payloads)
            if distinct < summands:
                kept.append(payloads)
        else:
            payloads = kept[s % distinct]
        exact_sum += update.astype(np.float64)

        start = time.perf_counter()
        for i, payload in enumerate(payloads):
            acc[i] = adder.add(acc[i], payload)
        add_times.append(time.perf_counter() - start)

        if s + 1 in checkpoints:
            start = time.perf_counter()
            chunk_sums = [decrypt(adder.to_bytes(a), layout.chunk_values(i)) for i, a in enumerate(acc)]
            out["decrypt_seconds"] = time.perf_counter() - start
            weighted, weights = layout.join(chunk_sums)
            err = max(float(np.abs(weighted - exact_sum).max()), float(np.abs(weights - (s + 1)).max()))
            out[f"max_abs_error_n{s + 1}"] = err
    # The first add allocates the accumulators; time the steady state.
    per_update_add = median(add_times[1:] if len(add_times) > 1 else add_times)
    out.update(
        bytes_per_param=wire_bytes / layout.num_params,
        encrypt_seconds=median(enc_times),
        aggregate_seconds_per_update=per_update_add,
        aggregate_params_per_s_per_core=layout.num_params / per_update_add,
        values_per_chunk=layout.values_per_chunk,
        num_chunks=layout.num_chunks,
        max_payload_bytes=max_payload,
    )
    return out


def made_ahead_seconds(scheme: str, keys: KeyPair, num_params: int, update: np.ndarray, repeats: int = 3) -> float:
    """Median time to encrypt one update when its encryptions of zero were made ahead (fedgpu.crypto.zero_pool)."""
    pool = crypto.zero_pool(scheme, keys.params, keys.public_material)
    assert pool is not None
    layout = ChunkLayout(num_params, keys.values_per_chunk)
    chunks = list(layout.split(update, 1.0))
    encrypt = crypto.encryptor(scheme, keys.params, keys.public_material, seed=0, zeros=pool).encrypt
    for c in chunks:  # counts how many one update draws
        encrypt(c)
    times = []
    for _ in range(repeats):
        needed = pool.drawn
        pool.refill()
        while len(pool) < needed:
            time.sleep(0.01)
        pool.pause()
        start = time.perf_counter()
        for c in chunks:
            encrypt(c)
        times.append(time.perf_counter() - start)
        assert pool.hits == needed, "an encryption of zero was made on demand"
    return median(times)


def run_bfv8(
    scheme: str,
    clip: float | None,
    seed: int,
    num_params: int,
    updates: Callable[[int], np.ndarray],
    summands: int,
    distinct: int,
    checkpoints: Sequence[int],
) -> tuple[dict[str, float | int | str], dict[str, object]]:
    """run_scheme for a bfv8 preset (its clip replaced if asked): (figures, parameters)."""
    params = PRESETS[scheme] if clip is None else dataclasses.replace(PRESETS[scheme], clip=clip)
    started = time.perf_counter()
    keys = Bfv8KeyPair.generate(params, scheme=scheme)
    keygen_s = time.perf_counter() - started
    # Seeded like a node's task: the rounding dither is reproducible, SEAL's randomness is not.
    encryptor = Bfv8Encryptor(keys.params, keys.public_material, seed=seed)
    out = run_scheme(
        scheme,
        ChunkLayout(num_params, keys.values_per_chunk),
        encryptor.encrypt,
        Bfv8Adder(keys.params),
        keys.decryptor().decrypt,
        updates,
        summands,
        distinct,
        checkpoints,
    )
    figures = {k: v for k, v in out.items() if k != "scheme"}
    figures["keygen_seconds"] = keygen_s
    # the error in quantisation steps: what does not depend on the update distribution
    figures.update({f"{k}_steps": float(v) / params.step for k, v in out.items() if k.startswith("max_abs_error_n")})
    figures["values_clipped"] = encryptor.clipped
    figures["encrypt_seconds_made_ahead"] = made_ahead_seconds(scheme, keys, num_params, updates(0))
    return figures, describe_bfv8(scheme, params)


def describe_bfv8(scheme: str, p: Bfv8Params) -> dict[str, object]:
    return {
        "scheme": scheme,
        "poly_modulus_degree": p.poly_modulus_degree,
        "modulus_bits": p.modulus.bit_length(),
        "modulus": p.modulus,
        "plain_modulus_bits": p.plain_bits,
        "quant_bits": p.quant_bits,
        "clip": p.clip,
        "step": p.step,
        "lanes": p.lanes,
        "lane_bits": p.lane_bits,
        "max_summands": p.max_summands,
        "weight_bits": p.weight_bits,
        "c0_bits": p.c0_bits,
        "c1_bits": p.c1_bits,
        "ciphertexts_per_chunk": p.ciphertexts_per_chunk,
        "packing": f"{p.lanes} values of {p.quant_bits} bits per coefficient in {p.lane_bits}-bit lanes",
        "encryption": "public key",
        "error_bound": "under one step per summand (stochastic rounding, unbiased) while |w*u| <= clip",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=int, default=1_000_000, help="parameters in the update (default %(default)s)")
    ap.add_argument("--summands", type=int, default=100, help="updates summed (default %(default)s)")
    ap.add_argument("--distinct", type=int, default=None, help="distinct encryptions, reused cyclically (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clip", type=float, default=None, help=f"bfv8's clip (default: the preset's, {PRESETS['bfv8'].clip})")
    args = ap.parse_args()
    summands = args.summands
    distinct = min(args.distinct or summands, summands)
    checkpoints = sorted({min(10, summands), summands})

    rng = np.random.default_rng(args.seed)
    # Model updates: float32, N(0, 1e-2). Regenerated from per-index seeds so memory stays at one update.
    seeds = rng.integers(0, 2**63, size=distinct)

    def updates(i: int) -> np.ndarray:
        return np.random.default_rng(seeds[i]).normal(0.0, 1e-2, args.params).astype(np.float32)

    started = time.perf_counter()
    keys = CkksKeyPair.generate()
    keygen_s = time.perf_counter() - started
    encryptor = CkksEncryptor(keys.params, keys.public_material)
    decryptor = keys.decryptor()
    ckks = run_scheme(
        "ckks",
        ChunkLayout(args.params, keys.values_per_chunk),
        encryptor.encrypt,
        CkksAdder(keys.params),
        decryptor.decrypt,
        updates,
        summands,
        distinct,
        checkpoints,
    )

    ckks["encrypt_seconds_made_ahead"] = made_ahead_seconds("ckks", keys, args.params, updates(0))

    # bfv8 refuses sums beyond its carry bound: each preset is summed up to its own limit.
    bfv_summands = min(summands, PRESETS["bfv8"].max_summands)
    bfv, bfv_params = run_bfv8(
        "bfv8", args.clip, args.seed, args.params, updates, bfv_summands, min(distinct, bfv_summands),
        sorted({min(10, bfv_summands), bfv_summands}),
    )
    small_summands = min(summands, PRESETS["bfv8-32"].max_summands)
    small, small_params = run_bfv8(
        "bfv8-32", args.clip, args.seed, args.params, updates, small_summands, min(distinct, small_summands),
        sorted({min(10, small_summands), small_summands}),
    )

    plain_enc = PlainEncryptor()
    plain_dec = PlainDecryptor()
    baseline = run_scheme(
        "none (float32 sum)",
        ChunkLayout(args.params, plain_enc.values_per_chunk),
        plain_enc.encrypt,
        PlainAdder(plain_enc.values_per_chunk),
        plain_dec.decrypt,
        updates,
        summands,
        distinct,
        checkpoints,
    )
    float32_rate = float(baseline["aggregate_params_per_s_per_core"])

    p = encryptor.params
    result = {
        **{k: v for k, v in ckks.items() if k != "scheme"},
        "keygen_seconds": keygen_s,
        "aggregate_slowdown_vs_float32": float32_rate / float(ckks["aggregate_params_per_s_per_core"]),
        "num_params": args.params,
        "summands": summands,
        "distinct_encryptions": distinct,
        "reused_cyclically": distinct < summands,
        "update_distribution": "float32 N(0, 1e-2), weight 1.0 per node",
        "ckks": {
            "poly_modulus_degree": p.poly_modulus_degree,
            "modulus_bits": p.modulus.bit_length(),
            "modulus": p.modulus,
            "scale_bits": p.scale_bits,
            "c0_bits": p.c0_bits,
            "c1_bits": p.c1_bits,
            "ciphertexts_per_chunk": p.ciphertexts_per_chunk,
            "packing": "complex (2 reals per slot)",
            "encryption": "public key",
            "max_abs_sum": p.max_abs_sum,
        },
        "bandwidth": {
            **bfv,
            "summands": bfv_summands,
            "aggregate_slowdown_vs_float32": float32_rate / float(bfv["aggregate_params_per_s_per_core"]),
            "bfv8": bfv_params,
            "bfv8-32": {
                **small,
                "summands": small_summands,
                "aggregate_slowdown_vs_float32": float32_rate / float(small["aggregate_params_per_s_per_core"]),
                "bfv8-32": small_params,
            },
        },
        "baseline": {k: v for k, v in baseline.items() if k not in ("values_per_chunk", "num_chunks")},
        "timing": "medians over updates; one thread; aggregate = header check + unpack + add, per update",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "load_average_1m_at_end": os.getloadavg()[0],
        },
        "wall_seconds": time.perf_counter() - started,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
