"""Canonical binary encodings and the SHA-256 hash chain.

Every field is either fixed width (big-endian integers) or length-prefixed
(``u16`` length + UTF-8 for strings, ``u32`` length + bytes for blobs), so the
encoding is unambiguous and easy to reproduce in any language, Solidity included.

Transaction hash: ``hash_n = sha256(hash_{n-1} || encode_tx(tx_n))`` with
``hash_0 = 32 zero bytes``. The encoding covers each posting's balance-after and
account version, so the chain commits to the state each transaction produced.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable, Mapping
from functools import lru_cache

from ledger.errors import LimitExceeded

ZERO_HASH = b"\x00" * 32
MAX_STRING_BYTES = 0xFFFF
MAX_METADATA_BYTES = 16 * 1024

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")
_TX_MAGIC = b"LTX1"
_REQ_MAGIC = b"LREQ1"

sha256 = hashlib.sha256


def encode_str(text: str) -> bytes:
    """``u16`` byte length followed by the UTF-8 bytes."""
    raw = text.encode("utf-8")
    if len(raw) > MAX_STRING_BYTES:
        raise LimitExceeded(f"string field of {len(raw)} bytes exceeds {MAX_STRING_BYTES}")
    return _U16.pack(len(raw)) + raw


@lru_cache(maxsize=1 << 16)
def _encode_leg(account: str, asset: str) -> bytes:
    """Account and asset of a posting: few distinct values, so cached."""
    return encode_str(account) + encode_str(asset)


@lru_cache(maxsize=256)
def _encode_kind(kind: str) -> bytes:
    return encode_str(kind)


def encode_i128(value: int) -> bytes:
    """Signed 128-bit two's complement, big-endian."""
    return value.to_bytes(16, "big", signed=True)


def canonical_json(value: Mapping[str, object]) -> str:
    """Deterministic JSON for metadata: sorted keys, no spaces, no floats."""
    if not value:
        return "{}"
    _reject_floats(value)
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if len(text.encode("utf-8")) > MAX_METADATA_BYTES:
        raise LimitExceeded(f"metadata exceeds {MAX_METADATA_BYTES} bytes")
    return text


def _reject_floats(value: object) -> None:
    if isinstance(value, float):
        raise TypeError("floats are not allowed in ledger metadata; use integers or strings")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError("metadata keys must be strings")
            _reject_floats(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _reject_floats(item)


PostingFields = tuple[str, str, int]
CommittedPostingFields = tuple[str, str, int, int, int]


def encode_request(
    kind: str,
    key: str,
    postings: Iterable[PostingFields],
    metadata: str,
    effective_at: int | None,
    reverses: int | None,
) -> bytes:
    """Encoding of what a client asked for; its digest decides idempotent retries."""
    parts = [
        _REQ_MAGIC,
        _encode_kind(kind),
        encode_str(key),
        _I64.pack(-1 if effective_at is None else effective_at),
        _U64.pack(reverses or 0),
        encode_str(metadata),
    ]
    for account, asset, amount in postings:
        parts += (_encode_leg(account, asset), amount.to_bytes(16, "big", signed=True))
    return b"".join(parts)


def encode_tx(
    seq: int,
    kind: str,
    key: str,
    effective_at: int,
    recorded_at: int,
    metadata: str,
    reverses: int | None,
    postings: Iterable[CommittedPostingFields],
) -> bytes:
    """Canonical encoding of a committed transaction (the hash chain's input)."""
    raw_metadata = metadata.encode("utf-8")
    legs = [
        _encode_leg(account, asset)
        + amount.to_bytes(16, "big", signed=True)
        + balance_after.to_bytes(16, "big", signed=True)
        + _U64.pack(version)
        for account, asset, amount, balance_after, version in postings
    ]
    return b"".join(
        (
            _TX_MAGIC,
            _U32.pack(len(legs)),
            _U64.pack(seq),
            _encode_kind(kind),
            encode_str(key),
            _I64.pack(effective_at),
            _I64.pack(recorded_at),
            _U64.pack(reverses or 0),
            _U32.pack(len(raw_metadata)),
            raw_metadata,
            *legs,
        )
    )


def chain_hash(prev_hash: bytes, encoded_tx: bytes) -> bytes:
    """``sha256(prev_hash || encoded_tx)``."""
    assert len(prev_hash) == 32
    return sha256(prev_hash + encoded_tx).digest()
