"""Canonical encodings (pure): the transaction encoding and hash chain, metadata JSON, and
the 240-byte block header.

The reference encoders here are written from the format documented in
``ledger/core/encoding.py`` and ``ledger/core/blocks.py`` with ``struct`` and ``hashlib``
only, so a change of the wire format fails a known-answer test.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.core import envelopes, genesis
from ledger.core.authorization import AuthState
from ledger.core.blocks import BlockHeader, make_block
from ledger.core.encoding import (
    MAX_METADATA_BYTES,
    ZERO_HASH,
    canonical_json,
    chain_hash,
    encode_tx,
)
from ledger.core.journal import ChainHead, Journal
from ledger.core.operations import deposit
from ledger.errors import LimitExceeded
from tests.conftest import ALICE_WALLET, OPERATOR

ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20

Posting = tuple[str, str, int, int, int]


@dataclasses.dataclass(frozen=True)
class Tx:
    seq: int = 7
    kind: str = "transfer"
    key: str = "order-7"
    effective_at: int = 1_767_225_600_000_000
    recorded_at: int = 1_767_225_600_000_001
    metadata: str = '{"note":"café","n":1}'
    reverses: int | None = None
    postings: tuple[Posting, ...] = (
        (ALICE, "USDC", -39_750_000, 60_250_000, 2),
        (BOB, "USDC", 39_750_000, 39_750_000, 1),
    )

    def encode(self) -> bytes:
        return encode_tx(
            self.seq,
            self.kind,
            self.key,
            self.effective_at,
            self.recorded_at,
            self.metadata,
            self.reverses,
            self.postings,
        )


# --------------------------------------------------------------------------- reference
def ref_str(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack(">H", len(raw)) + raw


def ref_i128(value: int) -> bytes:
    # High signed 64 bits, low unsigned 64 bits: big-endian two's complement.
    return struct.pack(">qQ", value >> 64, value & (2**64 - 1))


def ref_encode(tx: Tx) -> bytes:
    """The documented layout: magic, u32 posting count, u64 seq, str kind, str key, i64
    effective_at, i64 recorded_at, u64 reverses (0 = none), u32-prefixed metadata, then per
    posting: str account, str asset, i128 amount, i128 balance_after, u64 version."""
    meta = tx.metadata.encode("utf-8")
    out = b"LTX1" + struct.pack(">I", len(tx.postings)) + struct.pack(">Q", tx.seq)
    out += ref_str(tx.kind) + ref_str(tx.key)
    out += struct.pack(">qqQ", tx.effective_at, tx.recorded_at, tx.reverses or 0)
    out += struct.pack(">I", len(meta)) + meta
    for account, asset, amount, balance_after, version in tx.postings:
        out += ref_str(account) + ref_str(asset)
        out += ref_i128(amount) + ref_i128(balance_after) + struct.pack(">Q", version)
    return out


def ref_chain(prev: bytes, encoded: bytes) -> bytes:
    return hashlib.sha256(prev + encoded).digest()


# --------------------------------------------------------------------------- transactions
def test_known_answer_bytes() -> None:
    tx = Tx()
    encoded = tx.encode()
    assert encoded == ref_encode(tx)
    # Spot-check the layout by hand as well.
    assert encoded[:4] == b"LTX1"
    assert encoded[4:8] == b"\x00\x00\x00\x02"
    assert encoded[8:16] == b"\x00" * 7 + b"\x07"
    assert encoded[16:26] == b"\x00\x08transfer"
    meta_bytes = '{"note":"café","n":1}'.encode()
    assert len(meta_bytes) == 22  # 21 characters: the prefix counts UTF-8 bytes
    assert struct.pack(">I", 22) + meta_bytes in encoded
    assert ref_i128(-39_750_000) == b"\xff" * 12 + (2**32 - 39_750_000).to_bytes(4, "big")
    assert len(encoded) == 4 + 4 + 8 + 10 + 9 + 8 + 8 + 8 + 4 + 22 + 2 * (44 + 6 + 16 + 16 + 8)


def test_known_answer_hash() -> None:
    tx = Tx()
    expected = hashlib.sha256(ZERO_HASH + ref_encode(tx)).digest()
    assert chain_hash(ZERO_HASH, tx.encode()) == expected
    prev = hashlib.sha256(b"previous").digest()
    assert chain_hash(prev, tx.encode()) == ref_chain(prev, ref_encode(tx))
    with pytest.raises(AssertionError):
        chain_hash(prev[:31], tx.encode())


def test_known_answer_with_reversal_and_extremes() -> None:
    tx = Tx(
        seq=2**64 - 1,
        kind="reversal",
        key="k" * 128,
        effective_at=-(2**63),
        recorded_at=2**63 - 1,
        metadata="{}",
        reverses=3,
        postings=(("system:bridge", "USDC", -(2**127), -(2**127), 2**64 - 1),),
    )
    assert tx.encode() == ref_encode(tx)
    empty = Tx(postings=())
    assert empty.encode() == ref_encode(empty)
    assert empty.encode()[4:8] == b"\x00\x00\x00\x00"


def test_encoding_is_deterministic() -> None:
    tx = Tx()
    as_list = encode_tx(
        tx.seq,
        tx.kind,
        tx.key,
        tx.effective_at,
        tx.recorded_at,
        tx.metadata,
        tx.reverses,
        list(tx.postings),
    )
    as_generator = encode_tx(
        tx.seq,
        tx.kind,
        tx.key,
        tx.effective_at,
        tx.recorded_at,
        tx.metadata,
        tx.reverses,
        (p for p in tx.postings),
    )
    assert tx.encode() == Tx().encode() == as_list == as_generator


def _posting(i: int, field: int, value: str | int) -> tuple[Posting, ...]:
    legs: list[list[Any]] = [list(p) for p in Tx().postings]
    legs[i][field] = value
    return tuple((a, s, m, b, v) for a, s, m, b, v in legs)


VARIANTS: dict[str, Tx] = {
    "seq": Tx(seq=8),
    "kind": Tx(kind="deposit"),
    "key": Tx(key="order-8"),
    "key empty": Tx(key=""),
    "kind/key boundary": Tx(kind="transfe", key="rorder-7"),
    "effective_at": Tx(effective_at=1_767_225_600_000_001),
    "effective_at negative": Tx(effective_at=-1),
    "recorded_at": Tx(recorded_at=1_767_225_600_000_002),
    "effective/recorded swapped": Tx(
        effective_at=1_767_225_600_000_001, recorded_at=1_767_225_600_000_000
    ),
    "metadata": Tx(metadata='{"note":"cafe","n":1}'),
    "metadata empty object": Tx(metadata="{}"),
    "reverses": Tx(reverses=1),
    "reverses other": Tx(reverses=2),
    "posting order": Tx(postings=tuple(reversed(Tx().postings))),
    "posting dropped": Tx(postings=Tx().postings[:1]),
    "posting duplicated": Tx(postings=Tx().postings + Tx().postings[1:]),
}
for _i in range(2):
    VARIANTS[f"posting {_i} account"] = Tx(postings=_posting(_i, 0, "0x" + "c3" * 20))
    VARIANTS[f"posting {_i} account case"] = Tx(
        postings=_posting(_i, 0, Tx().postings[_i][0].upper())
    )
    VARIANTS[f"posting {_i} asset"] = Tx(postings=_posting(_i, 1, "USDT"))
    VARIANTS[f"posting {_i} amount"] = Tx(postings=_posting(_i, 2, Tx().postings[_i][2] + 1))
    VARIANTS[f"posting {_i} amount sign"] = Tx(postings=_posting(_i, 2, -Tx().postings[_i][2]))
    VARIANTS[f"posting {_i} balance_after"] = Tx(postings=_posting(_i, 3, Tx().postings[_i][3] - 1))
    VARIANTS[f"posting {_i} version"] = Tx(postings=_posting(_i, 4, Tx().postings[_i][4] + 1))


@pytest.mark.parametrize("name", list(VARIANTS))
def test_changing_any_field_changes_encoding_and_hash(name: str) -> None:
    base, variant = Tx(), VARIANTS[name]
    assert variant != base
    assert variant.encode() != base.encode()
    assert variant.encode() == ref_encode(variant)
    assert chain_hash(ZERO_HASH, variant.encode()) != chain_hash(ZERO_HASH, base.encode())


def test_all_variants_are_pairwise_distinct() -> None:
    encodings = {name: tx.encode() for name, tx in VARIANTS.items()} | {"base": Tx().encode()}
    assert len(set(encodings.values())) == len(encodings)


def test_previous_hash_changes_the_chain_hash() -> None:
    encoded = Tx().encode()
    prev = hashlib.sha256(b"x").digest()
    assert chain_hash(prev, encoded) != chain_hash(ZERO_HASH, encoded)


def test_journal_chains_with_the_documented_encoding() -> None:
    """The hashes the journal state machine commits are exactly sha256(prev || encoding),
    for every kind of signed transaction: genesis (the operator key), an onboarding, an
    operator-signed deposit and an owner-signed transfer (signatures live in the metadata,
    which the encoding covers)."""
    domain = genesis.l2_domain(genesis.DEFAULT_L2_CHAIN_ID)
    alice = ALICE_WALLET.address
    registration = genesis.operator_registration(
        OPERATOR.address,
        "genesis",
        l1_chain_id=OPERATOR.l1_chain_id,
        l2_chain_id=genesis.DEFAULT_L2_CHAIN_ID,
    )
    onboarding_auth, onboarding = envelopes.verify_onboarding(
        ALICE_WALLET.onboarding(domain), domain, ALICE_WALLET.l1_chain_id
    )
    signed_transfer = ALICE_WALLET.transfer(alice, BOB, 39_750_000, domain, 1, 4_102_444_800)
    requests = [
        OPERATOR.sign_system(registration),
        envelopes.request_for_onboarding(onboarding_auth, onboarding),
        OPERATOR.sign_system(deposit(alice, 100_000_000, "d-1")),
        envelopes.request_for_action(envelopes.verify_action(signed_transfer, domain)),
    ]
    journal = Journal(ChainHead(), {}, {}, AuthState())
    records = [journal.apply(request, b"\x00" * 32, 1_000) for request in requests]
    assert [r.kind for r in records] == ["operator_keys", "onboarding", "deposit", "transfer"]
    assert [r.seq for r in records] == [1, 2, 3, 4]
    prev = ZERO_HASH
    for record in records:
        assert json.loads(record.metadata)["auth"]  # the signature is part of the encoding
        reference = Tx(
            seq=record.seq,
            kind=record.kind,
            key=record.key,
            effective_at=record.effective_at,
            recorded_at=record.recorded_at,
            metadata=record.metadata,
            reverses=record.reverses,
            postings=tuple(
                (p.account, p.asset, p.amount, p.balance_after, p.version) for p in record.postings
            ),
        )
        assert record.prev_hash == prev
        assert record.encode() == ref_encode(reference)
        assert record.hash == ref_chain(prev, ref_encode(reference))
        prev = record.hash
    # Recorded time strictly increases.
    assert [r.recorded_at for r in records] == [1_000, 1_001, 1_002, 1_003]
    transfer = records[-1]
    assert transfer.key == f"{alice}/1"
    assert [p.version for p in transfer.postings] == [2, 1]
    assert [p.balance_after for p in transfer.postings] == [60_250_000, 39_750_000]


texts = st.text(max_size=12)
postings = st.tuples(
    texts,
    st.sampled_from(["USDC", "BTC", ""]),
    st.integers(-(2**127), 2**127 - 1),
    st.integers(-(2**127), 2**127 - 1),
    st.integers(0, 2**64 - 1),
)
txs = st.builds(
    Tx,
    seq=st.integers(0, 2**64 - 1),
    kind=texts,
    key=texts,
    effective_at=st.integers(-(2**63), 2**63 - 1),
    recorded_at=st.integers(-(2**63), 2**63 - 1),
    metadata=texts,
    # 0 would alias "no reversal"; sequences start at 1, so it never occurs.
    reverses=st.none() | st.integers(1, 2**64 - 1),
    postings=st.lists(postings, max_size=3).map(tuple),
)


@settings(max_examples=300, deadline=None)
@given(a=txs, b=txs)
def test_encoding_is_injective(a: Tx, b: Tx) -> None:
    assert a.encode() == ref_encode(a)
    assert (a.encode() == b.encode()) == (a == b)


@settings(max_examples=100, deadline=None)
@given(tx=txs, data=st.data())
def test_any_single_field_change_is_seen(tx: Tx, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from([f.name for f in dataclasses.fields(Tx)]), label="field")
    strategy = {
        "seq": st.integers(0, 2**64 - 1),
        "kind": texts,
        "key": texts,
        "effective_at": st.integers(-(2**63), 2**63 - 1),
        "recorded_at": st.integers(-(2**63), 2**63 - 1),
        "metadata": texts,
        "reverses": st.none() | st.integers(1, 2**64 - 1),
        "postings": st.lists(postings, max_size=3).map(tuple),
    }[name]
    value: Any = data.draw(strategy.filter(lambda v: v != getattr(tx, name)), label="value")
    changes: dict[str, Any] = {name: value}
    changed = dataclasses.replace(tx, **changes)
    assert chain_hash(ZERO_HASH, changed.encode()) != chain_hash(ZERO_HASH, tx.encode())


def test_oversized_string_field_is_refused() -> None:
    with pytest.raises(LimitExceeded):
        Tx(key="x" * 0x10000).encode()
    assert Tx(key="x" * 0xFFFF).encode() == ref_encode(Tx(key="x" * 0xFFFF))


# --------------------------------------------------------------------------- canonical_json
@pytest.mark.parametrize(
    "value",
    [
        {"a": 1.0},
        {"a": 0.5, "b": 1},
        {"a": float("nan")},
        {"a": float("inf")},
        {"a": [1, 2, 3.0]},
        {"a": {"b": {"c": -0.0}}},
        {"a": [{"b": [1, {"c": 2.5}]}]},
        {"a": (1, 2.0)},
        {"z": "ok", "y": {"x": [True, None, {"w": 1e3}]}},
    ],
)
def test_canonical_json_rejects_floats(value: dict[str, Any]) -> None:
    with pytest.raises(TypeError, match="floats are not allowed"):
        canonical_json(value)


def test_canonical_json_rejects_non_string_keys() -> None:
    with pytest.raises(TypeError, match="keys must be strings"):
        canonical_json({"a": {1: "x"}})


def test_canonical_json_sorts_keys_without_spaces() -> None:
    value = {"b": 1, "a": {"d": [3, {"f": 1, "e": 2}], "c": "é"}, "A": None, "_": True}
    text = canonical_json(value)
    assert text == '{"A":null,"_":true,"a":{"c":"é","d":[3,{"e":2,"f":1}]},"b":1}'
    assert canonical_json(dict(reversed(list(value.items())))) == text
    assert json.loads(text) == value


def test_canonical_json_keeps_big_integers_exact() -> None:
    assert canonical_json({"n": 2**80, "m": -(2**70)}) == f'{{"m":{-(2**70)},"n":{2**80}}}'


def test_canonical_json_size_limit() -> None:
    ok = {"k": "x" * (MAX_METADATA_BYTES - len('{"k":""}'))}
    assert len(canonical_json(ok).encode()) == MAX_METADATA_BYTES
    with pytest.raises(LimitExceeded):
        canonical_json({"k": "x" * (MAX_METADATA_BYTES - len('{"k":""}') + 1)})


# --------------------------------------------------------------------------- block header
H1 = hashlib.sha256(b"prev").digest()
H2 = hashlib.sha256(b"head").digest()
H3 = hashlib.sha256(b"root").digest()
H4 = hashlib.sha256(b"withdrawals").digest()
HEADER = BlockHeader(
    number=3,
    first_seq=101,
    last_seq=250,
    sealed_at=1_767_225_600_123_456,
    leaf_count=42,
    prev_block_hash=H1,
    tx_head_hash=H2,
    state_root=H3,
    withdrawal_root=H4,
)


def ref_header(h: BlockHeader) -> bytes:
    """``LBLK0001`` + ``abi.encodePacked(uint64 x5, bytes32 x4)``, written out by hand."""
    out = b"LBLK0001"
    for value in (h.number, h.first_seq, h.last_seq, h.sealed_at, h.leaf_count):
        out += value.to_bytes(8, "big")
    return out + h.prev_block_hash + h.tx_head_hash + h.state_root + h.withdrawal_root


def test_header_is_176_bytes_with_magic() -> None:
    """8 magic bytes + 5 uint64 + 4 bytes32, as README and blocks.py document."""
    encoded = HEADER.encode()
    assert encoded.startswith(b"LBLK0001")
    assert len(encoded) == 176


def test_header_matches_the_documented_packed_layout() -> None:
    assert HEADER.encode() == ref_header(HEADER)
    assert HEADER.hash == hashlib.sha256(ref_header(HEADER)).digest()
    assert BlockHeader(0, 0, 0, 0, 0, ZERO_HASH, ZERO_HASH, ZERO_HASH).encode() == (
        b"LBLK0001" + b"\x00" * (5 * 8 + 4 * 32)
    )


def _changed(value: Any) -> Any:
    if isinstance(value, bytes):
        return value[:-1] + bytes([value[-1] ^ 1])
    return value + 1


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(BlockHeader)])
def test_header_hash_changes_with_any_field(name: str) -> None:
    changed = dataclasses.replace(HEADER, **{name: _changed(getattr(HEADER, name))})
    assert changed.encode() != HEADER.encode()
    assert changed.hash != HEADER.hash
    assert len(changed.encode()) == len(HEADER.encode())


def test_header_json_round_trip() -> None:
    data = HEADER.to_json()
    assert list(data) == [
        "number",
        "first_seq",
        "last_seq",
        "sealed_at",
        "leaf_count",
        "prev_block_hash",
        "tx_head_hash",
        "state_root",
        "withdrawal_root",
        "hash",
    ]
    assert data["hash"] == "0x" + HEADER.hash.hex()
    assert data["state_root"] == "0x" + H3.hex()
    assert BlockHeader.from_json(data) == HEADER
    assert BlockHeader.from_json(json.loads(json.dumps(data))) == HEADER
    unprefixed = {k: v[2:] if isinstance(v, str) else v for k, v in data.items()}
    assert BlockHeader.from_json(unprefixed) == HEADER


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("number", -1),
        ("number", 2**64),
        ("first_seq", True),
        ("last_seq", 1.0),
        ("sealed_at", "5"),
        ("leaf_count", None),
        ("state_root", "0x" + "00" * 31),
        ("tx_head_hash", "0x" + "00" * 33),
        ("prev_block_hash", "0x" + "zz" * 32),
        ("withdrawal_root", 0),
    ],
)
def test_header_from_json_rejects_malformed_fields(name: str, value: Any) -> None:
    data = HEADER.to_json() | {name: value}
    with pytest.raises((ValueError, TypeError, AttributeError)):
        BlockHeader.from_json(data)


def test_header_from_json_requires_every_field() -> None:
    for name in list(HEADER.to_json())[:-1]:
        data = HEADER.to_json()
        del data[name]
        with pytest.raises(KeyError):
            BlockHeader.from_json(data)


def test_make_block_links_blocks() -> None:
    rows = [(ALICE, "USDC", 5), ("system:bridge", "USDC", -5)]
    first = make_block(None, 3, H2, rows, 1_000)
    assert (first.number, first.first_seq, first.last_seq) == (1, 1, 3)
    assert (first.prev_block_hash, first.leaf_count, first.withdrawal_root) == (
        ZERO_HASH,
        2,
        ZERO_HASH,
    )
    second = make_block(first, 9, H1, rows, 500)  # a clock going backwards
    assert (second.number, second.first_seq, second.last_seq) == (2, 4, 9)
    assert second.prev_block_hash == first.hash
    assert second.sealed_at == first.sealed_at + 1
