from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedgpu.errors import ProtocolError, RewardsError
from fedgpu.rewards.chain import (
    GENESIS,
    LedgerEntry,
    LedgerRow,
    Receipt,
    build_rows,
    canonical_json,
    digest,
    head_of,
    issue_receipt,
    public_key_bytes,
    sign_head,
    verify_chain,
    verify_head,
    verify_ledger,
)

EVIDENCE = digest({"cohorts": [["a", "b"], ["c"]], "utilities": [[[], 0.0], [[0], 0.25]], "seed": 7})


def entries(job: str, rnd: int, nodes: list[str]) -> list[LedgerEntry]:
    return [
        LedgerEntry(job, rnd, n, value=0.1 * (i + 1), reward=10.0 * i, cohort=tuple(nodes), evidence_digest=EVIDENCE)
        for i, n in enumerate(nodes)
    ]


@pytest.fixture
def rows() -> list[LedgerRow]:
    first = build_rows(GENESIS, entries("job", 1, ["a", "b", "c"]))
    return first + build_rows(head_of(first), entries("job", 2, ["a", "c"]))


def test_an_intact_chain_verifies(rows: list[LedgerRow]) -> None:
    assert verify_chain(rows) is None
    assert rows[0].prev_hash == GENESIS and rows[3].prev_hash == rows[2].entry_hash
    assert verify_chain(rows[3:], start_hash=rows[2].entry_hash) is None  # a suffix, from a trusted head


@pytest.mark.parametrize("index", [0, 2, 4])
def test_altering_one_rows_value_is_caught_at_that_row(rows: list[LedgerRow], index: int) -> None:
    tampered = list(rows)
    tampered[index] = dataclasses.replace(rows[index], value=rows[index].value + 1e-12)
    assert verify_chain(tampered) == index


def test_rehashing_a_rewritten_row_breaks_the_next_link(rows: list[LedgerRow]) -> None:
    forged = build_rows(rows[1].prev_hash, [dataclasses.replace(rows[1], reward=1e6)])[0]
    assert verify_chain([rows[0], forged, *rows[2:]]) == 2


def test_dropping_or_reordering_rows_is_caught(rows: list[LedgerRow]) -> None:
    assert verify_chain([rows[0], *rows[2:]]) == 1
    assert verify_chain([rows[1], rows[0], *rows[2:]]) == 0


def test_store_records_round_trip(rows: list[LedgerRow]) -> None:
    records = [{"id": i + 1, **row.to_record()} for i, row in enumerate(rows)]
    assert records[0]["cohort"] == '["a","b","c"]'
    back = [LedgerRow.from_record(r) for r in json.loads(json.dumps(records))]
    assert back == rows and verify_chain(back) is None


def test_numbers_hash_the_same_whatever_their_type() -> None:
    plain = build_rows(GENESIS, [LedgerEntry("j", 1, "n", 1.0, 2.0, ("n",), EVIDENCE)])
    numpy = build_rows(GENESIS, [LedgerEntry("j", np.int64(1), "n", np.float32(1.0), 2, ["n"], EVIDENCE)])  # type: ignore[arg-type]
    assert plain[0].entry_hash == numpy[0].entry_hash


def test_canonical_json_is_compact_sorted_and_round_trips_floats() -> None:
    x = 0.1 + 0.2
    text = canonical_json({"b": x, "a": [1, "é"]})
    assert text == b'{"a":[1,"\\u00e9"],"b":0.30000000000000004}'
    assert json.loads(text)["b"] == x
    with pytest.raises(ValueError):
        canonical_json({"v": float("nan")})


def test_head_signature_verifies_and_a_tampered_head_does_not() -> None:
    key = Ed25519PrivateKey.generate()
    pub = public_key_bytes(key)
    head = "ab" * 32
    sig = sign_head(key, "job", 3, head)
    assert verify_head(pub, "job", 3, head, sig)
    assert not verify_head(pub, "job", 3, "cd" * 32, sig)
    assert not verify_head(pub, "job", 4, head, sig)
    assert not verify_head(pub, "other", 3, head, sig)
    assert not verify_head(public_key_bytes(Ed25519PrivateKey.generate()), "job", 3, head, sig)
    assert not verify_head(b"short", "job", 3, head, sig)
    assert not verify_head(pub, "job", 3, head, sig[:-1])


def test_receipts_round_trip_and_verify(rows: list[LedgerRow]) -> None:
    key = Ed25519PrivateKey.generate()
    receipt = issue_receipt(key, rows[4], head_of(rows))
    back = Receipt.from_json(receipt.to_json())
    assert back == receipt and back.verify()
    assert not dataclasses.replace(back, head_hash=rows[0].entry_hash).verify()
    assert not dataclasses.replace(back, signature="zz").verify()


@pytest.mark.parametrize(
    "text",
    ["not json", "[]", '{"job_id": "j"}', json.dumps({"job_id": 1, "round": 1, "node_id": "n", "reward": 1.0, "entry_hash": "", "head_hash": "", "signature": "", "aggregator_key": ""})],
)
def test_malformed_receipts_are_protocol_errors(text: str) -> None:
    with pytest.raises(ProtocolError):
        Receipt.from_json(text)


def test_build_rows_checks_hashes() -> None:
    with pytest.raises(RewardsError, match="prev_hash"):
        build_rows("xyz", [])
    with pytest.raises(RewardsError, match="evidence_digest"):
        build_rows(GENESIS, [LedgerEntry("j", 1, "n", 0.0, 0.0, (), "nothex")])


def test_a_stored_ledger_verifies_from_plain_rows_and_heads(rows: list[LedgerRow]) -> None:
    key = Ed25519PrivateKey.generate()
    records = [{**r.to_record(), "id": i + 1} for i, r in enumerate(rows)]
    heads = [
        {"job_id": "job", "round": rnd, "head_hash": h, "signature": sign_head(key, "job", rnd, h).hex()}
        for rnd, h in ((1, rows[2].entry_hash), (2, rows[4].entry_hash))
    ]
    ok, msg = verify_ledger(records, heads, public_key_bytes(key))
    assert ok and msg.startswith("ledger OK: 5 rows, 2 signed round heads"), msg
    ok, msg = verify_ledger(records, heads[:1], public_key_bytes(key))
    assert not ok and msg == "job job round 2 has rows but no signed head"
    ok, msg = verify_ledger(records, [heads[0], {**heads[1], "head_hash": rows[3].entry_hash}], public_key_bytes(key))
    assert not ok and "head of job job round 2 does not match" in msg
    ok, msg = verify_ledger(records, [heads[0], {**heads[1], "signature": "not hex"}], public_key_bytes(key))
    assert not ok and "signature of job job round 2 does not verify" in msg
    ok, msg = verify_ledger([{**records[0], "reward": 1e9}, *records[1:]], heads, public_key_bytes(key))
    assert not ok and msg.startswith("row 1 (job job, round 1, node a)")
    assert verify_ledger(records, heads, None) == (False, "no signing key in the database")
    assert verify_ledger([], [], None) == (True, "empty ledger")
