"""Encryption of updates: one registry from scheme name to the three role objects.

``generate_keys`` is for the job driver, ``encryptor`` for nodes, ``adder`` for the aggregator.

* ``ckks``: addition-only CKKS, 13.5 bytes per value, error ~1e-6 on a 100-node sum (the default);
* ``bfv8``: the bandwidth mode, 8-bit stochastic quantisation packed into BFV, 4.54 bytes per value,
  error under one quantisation step per summed update, at most 128 updates per sum;
* ``bfv8-32``: the same with less carry room, 3.95 bytes per value, at most 32 updates per sum;
* ``none``: float32 in the clear, for debugging and as the benchmarks' baseline.

Each scheme's modules are imported only when a role object is made, so the aggregator never loads
SEAL (its adders are numpy only).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedgpu.crypto.plain import PlainAdder, PlainEncryptor, PlainKeyPair, plain_values_per_chunk
from fedgpu.crypto.scheme import (
    Adder,
    ChunkLayout,
    Decryptor,
    Encryptor,
    KeyPair,
    context_fingerprint,
)
from fedgpu.crypto.zero_pool import ZeroPool, ZeroSource
from fedgpu.errors import ConfigError


@dataclass(frozen=True)
class _Scheme:
    generate_keys: Callable[[], KeyPair]
    encryptor: Callable[[bytes, bytes, int | None, ZeroSource | None], Encryptor]
    adder: Callable[[bytes], Adder]
    max_summands: Callable[[], int | None]
    load_keys: Callable[[Path], KeyPair]  # what a job's driver saved, to resume it
    sum_error: Callable[[bytes, int], tuple[float, float]]  # see sum_error below
    zeros: Callable[[bytes, bytes], ZeroPool] | None = None  # public-key schemes: see zero_pool below


def _ckks_keys() -> KeyPair:
    from fedgpu.crypto.ckks import CkksKeyPair

    return CkksKeyPair.generate()


def _ckks_load(directory: Path) -> KeyPair:
    from fedgpu.crypto.ckks import CkksKeyPair

    return CkksKeyPair.load(directory)


def _ckks_encryptor(params: bytes, public_material: bytes, seed: int | None, zeros: ZeroSource | None) -> Encryptor:
    from fedgpu.crypto.ckks import CkksEncryptor

    return CkksEncryptor(params, public_material, zeros)  # draws nothing but SEAL's encryption randomness


def _ckks_zeros(params: bytes, public_material: bytes) -> ZeroPool:
    from fedgpu.crypto.ckks import ckks_zero_source
    from fedgpu.crypto.ckks_format import CkksParams

    return ZeroPool(ckks_zero_source(params, public_material), CkksParams.from_bytes(params).poly_modulus_degree)


def _ckks_adder(params: bytes) -> Adder:
    from fedgpu.crypto.ckks_format import CkksAdder

    return CkksAdder(params)


def _ckks_sum_error(params: bytes, summands: int) -> tuple[float, float]:
    # 5x the error budget of a 100-update sum (2e-6, fedgpu.crypto.ckks_format), grown linearly beyond
    # (the noise grows like the square root of the count).
    error = 1e-5 * max(1.0, summands / 100)
    return error, error


def _bfv8_keys(name: str) -> Callable[[], KeyPair]:
    def generate() -> KeyPair:
        from fedgpu.crypto.bfv import Bfv8KeyPair

        return Bfv8KeyPair.generate(scheme=name)

    return generate


def _bfv8_load(name: str) -> Callable[[Path], KeyPair]:
    def load(directory: Path) -> KeyPair:
        from fedgpu.crypto.bfv import Bfv8KeyPair

        return Bfv8KeyPair.load(directory, scheme=name)

    return load


def _bfv8_encryptor(params: bytes, public_material: bytes, seed: int | None, zeros: ZeroSource | None) -> Encryptor:
    from fedgpu.crypto.bfv import Bfv8Encryptor

    return Bfv8Encryptor(params, public_material, seed=seed, zeros=zeros)


def _bfv8_zeros(params: bytes, public_material: bytes) -> ZeroPool:
    from fedgpu.crypto.bfv import bfv8_zero_source
    from fedgpu.crypto.bfv_format import Bfv8Params

    return ZeroPool(bfv8_zero_source(params, public_material), Bfv8Params.from_bytes(params).poly_modulus_degree)


def _bfv8_adder(params: bytes) -> Adder:
    from fedgpu.crypto.bfv_format import Bfv8Adder

    return Bfv8Adder(params)


def _bfv8_sum_error(params: bytes, summands: int) -> tuple[float, float]:
    from fedgpu.crypto.bfv_format import Bfv8Params

    p = Bfv8Params.from_bytes(params)
    # each stochastic rounding is off by less than one step; the weight slot is rounded to nearest
    return summands * p.step, summands * 0.5 / 2**p.weight_bits


def _bfv8_max_summands(name: str) -> Callable[[], int | None]:
    def limit() -> int | None:
        from fedgpu.crypto.bfv_format import PRESETS

        return PRESETS[name].max_summands

    return limit


_REGISTRY: dict[str, _Scheme] = {
    "ckks": _Scheme(_ckks_keys, _ckks_encryptor, _ckks_adder, lambda: None, _ckks_load, _ckks_sum_error, _ckks_zeros),
    "bfv8": _Scheme(_bfv8_keys("bfv8"), _bfv8_encryptor, _bfv8_adder, _bfv8_max_summands("bfv8"), _bfv8_load("bfv8"), _bfv8_sum_error, _bfv8_zeros),
    "bfv8-32": _Scheme(
        _bfv8_keys("bfv8-32"), _bfv8_encryptor, _bfv8_adder, _bfv8_max_summands("bfv8-32"), _bfv8_load("bfv8-32"), _bfv8_sum_error, _bfv8_zeros
    ),
    "none": _Scheme(
        PlainKeyPair,
        lambda params, public_material, seed, zeros: PlainEncryptor(plain_values_per_chunk(params)),
        lambda params: PlainAdder(plain_values_per_chunk(params)),
        lambda: None,
        PlainKeyPair.load,
        lambda params, summands: (0.0, 0.0),  # float32 rounding is relative: fedgpu.claims.RELATIVE_SLACK
    ),
}

SCHEMES = tuple(_REGISTRY)


def _get(scheme: str) -> _Scheme:
    try:
        return _REGISTRY[scheme]
    except KeyError:
        raise ConfigError(f"encryption.scheme = {scheme!r}: allowed values are {', '.join(SCHEMES)}") from None


def generate_keys(scheme: str) -> KeyPair:
    """Job driver: make fresh keys for one job."""
    return _get(scheme).generate_keys()


def encryptor(scheme: str, params: bytes, public_material: bytes, seed: int | None = None, zeros: ZeroPool | None = None) -> Encryptor:
    """Node: build an encryptor from what the aggregator relayed (never a secret key).

    ``seed`` (the task's) seeds what a scheme draws besides its encryption randomness: bfv8's
    rounding dither, so that replicated tasks round alike. ckks and none draw nothing else and
    ignore it; without it bfv8 draws its dither from the operating system. ``zeros``: the pool
    :func:`zero_pool` made for the same scheme, parameters and public key, drawn on first.
    """
    return _get(scheme).encryptor(params, public_material, seed, zeros)


def zero_pool(scheme: str, params: bytes, public_material: bytes) -> ZeroPool | None:
    """Node: a pool of encryptions of zero under this public key, filled while the node waits
    (:mod:`fedgpu.crypto.zero_pool`); None for a scheme without public-key encryption (``none``)."""
    make = _get(scheme).zeros
    return make(params, public_material) if make is not None else None


def adder(scheme: str, params: bytes) -> Adder:
    """Aggregator: build a key-free adder from the scheme parameters."""
    return _get(scheme).adder(params)


def load_keys(scheme: str, directory: Path) -> KeyPair:
    """Job driver: the keys a job's driver saved in ``directory`` (to resume it)."""
    return _get(scheme).load_keys(directory)


def max_summands(scheme: str) -> int | None:
    """Most updates one sum of ``scheme`` may hold (with the parameters generate_keys uses); None: no
    count limit (ckks limits the sum's magnitude instead, ``CkksParams.max_abs_sum``)."""
    return _get(scheme).max_summands()


def headroom(scheme: str, params: bytes) -> float | None:
    """The largest |value| a sum of ``scheme`` holds (ckks: ``CkksParams.max_abs_sum``); None: no magnitude
    limit (none, or bfv8, which clips to its range instead)."""
    if scheme != "ckks":
        return None
    from fedgpu.crypto.ckks_format import CkksParams

    return float(CkksParams.from_bytes(params).max_abs_sum)


def sum_error(scheme: str, params: bytes, summands: int) -> tuple[float, float]:
    """How far a sum of ``summands`` honest payloads may decrypt from the exact sum: (per value, in the
    weight slot), absolute. The driver allows it when it checks a cohort's claims (fedgpu.claims)."""
    return _get(scheme).sum_error(params, summands)


__all__ = [
    "Adder",
    "ChunkLayout",
    "Decryptor",
    "Encryptor",
    "KeyPair",
    "SCHEMES",
    "ZeroPool",
    "adder",
    "context_fingerprint",
    "encryptor",
    "generate_keys",
    "headroom",
    "load_keys",
    "max_summands",
    "sum_error",
    "zero_pool",
]
