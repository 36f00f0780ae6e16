"""Encryption of updates: one registry from scheme name to the three role objects.

``generate_keys`` is for the job driver, ``encryptor`` for nodes, ``adder`` for the aggregator.
"""

from __future__ import annotations

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
from fedgpu.errors import ConfigError

SCHEMES = ("ckks", "none")


def _check(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise ConfigError(f"encryption.scheme = {scheme!r}: allowed values are {', '.join(SCHEMES)}")


def generate_keys(scheme: str) -> KeyPair:
    """Job driver: make fresh keys for one job."""
    _check(scheme)
    if scheme == "none":
        return PlainKeyPair()
    from fedgpu.crypto.ckks import CkksKeyPair

    return CkksKeyPair.generate()


def load_keys(scheme: str, directory: Path) -> KeyPair:
    """Job driver: the keys a job's driver saved in ``directory`` (to resume it)."""
    _check(scheme)
    if scheme == "none":
        return PlainKeyPair.load(directory)
    from fedgpu.crypto.ckks import CkksKeyPair

    return CkksKeyPair.load(directory)


def encryptor(scheme: str, params: bytes, public_material: bytes) -> Encryptor:
    """Node: build an encryptor from what the aggregator relayed (never a secret key)."""
    _check(scheme)
    if scheme == "none":
        return PlainEncryptor(plain_values_per_chunk(params))
    from fedgpu.crypto.ckks import CkksEncryptor

    return CkksEncryptor(params, public_material)


def adder(scheme: str, params: bytes) -> Adder:
    """Aggregator: build a key-free adder from the scheme parameters."""
    _check(scheme)
    if scheme == "none":
        return PlainAdder(plain_values_per_chunk(params))
    from fedgpu.crypto.ckks_format import CkksAdder

    return CkksAdder(params)


__all__ = [
    "Adder",
    "ChunkLayout",
    "Decryptor",
    "Encryptor",
    "KeyPair",
    "SCHEMES",
    "adder",
    "context_fingerprint",
    "encryptor",
    "generate_keys",
    "load_keys",
]
