"""Benchmark the ckks scheme and the bfv8 bandwidth mode on one model-sized update, against the
plaintext float32 sum measured in the same run.

Prints one JSON object: ckks's figures at the top level, bfv8's under ``bandwidth`` (the same keys),
the float32 sum under ``baseline``. Every update is chunked with fedgpu's ChunkLayout (weight slot
included), as a node would send it. Summands are distinct encryptions unless ``--distinct`` asks for
fewer, in which case payloads are reused cyclically; reuse makes their noise add coherently (and
repeats bfv8's roundings), so errors then read pessimistic (the JSON says how many were distinct).

    python scripts/bench_crypto.py                 # 1,000,000 parameters, 100 summands
    python scripts/bench_crypto.py --params 100000 --distinct 20
"""

from __future__ import annotations

import os

# Single-core figures: keep any BLAS/FFT pool to one thread (SEAL runs single-threaded as called).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402

import numpy as np  # noqa: E402

from fedgpu.crypto.bfv import Bfv8Adder, Bfv8Encryptor, Bfv8KeyPair  # noqa: E402
from fedgpu.crypto.ckks import CkksAdder, CkksEncryptor, CkksKeyPair  # noqa: E402
from fedgpu.crypto.plain import PlainAdder, PlainDecryptor, PlainEncryptor  # noqa: E402
from fedgpu.crypto.scheme import Adder, ChunkLayout  # noqa: E402


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=int, default=1_000_000, help="parameters in the update (default %(default)s)")
    ap.add_argument("--summands", type=int, default=100, help="updates summed (default %(default)s)")
    ap.add_argument("--distinct", type=int, default=None, help="distinct encryptions, reused cyclically (default: all)")
    ap.add_argument("--seed", type=int, default=0)
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

    t0 = time.perf_counter()
    bfv_keys = Bfv8KeyPair.generate()
    bfv_keygen_s = time.perf_counter() - t0
    # Seeded like a node's task: the rounding dither is reproducible, SEAL's randomness is not.
    bfv_encryptor = Bfv8Encryptor(bfv_keys.params, bfv_keys.public_material, seed=args.seed)
    bfv = run_scheme(
        "bfv8",
        ChunkLayout(args.params, bfv_keys.values_per_chunk),
        bfv_encryptor.encrypt,
        Bfv8Adder(bfv_keys.params),
        bfv_keys.decryptor().decrypt,
        updates,
        summands,
        distinct,
        checkpoints,
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
    bp = bfv_encryptor.params
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
            **{k: v for k, v in bfv.items() if k != "scheme"},
            "keygen_seconds": bfv_keygen_s,
            "aggregate_slowdown_vs_float32": float32_rate / float(bfv["aggregate_params_per_s_per_core"]),
            # the error in quantisation steps: what does not depend on the update distribution
            **{f"{k}_steps": float(v) / bp.step for k, v in bfv.items() if k.startswith("max_abs_error_n")},
            "values_clipped": bfv_encryptor.clipped,
            "bfv8": {
                "scheme": "bfv8",
                "poly_modulus_degree": bp.poly_modulus_degree,
                "modulus_bits": bp.modulus.bit_length(),
                "modulus": bp.modulus,
                "plain_modulus_bits": bp.plain_bits,
                "quant_bits": bp.quant_bits,
                "clip": bp.clip,
                "step": bp.step,
                "lanes": bp.lanes,
                "lane_bits": bp.lane_bits,
                "max_summands": bp.max_summands,
                "weight_bits": bp.weight_bits,
                "c0_bits": bp.c0_bits,
                "c1_bits": bp.c1_bits,
                "ciphertexts_per_chunk": bp.ciphertexts_per_chunk,
                "packing": f"{bp.lanes} values of {bp.quant_bits} bits per coefficient, {bp.lane_bits}-bit lanes",
                "encryption": "public key",
                "error_bound_per_summand": "under one step (stochastic rounding, unbiased) for |w*u| <= clip",
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
