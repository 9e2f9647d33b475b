"""Blocks: sealed ranges of transactions with a state root over all balances.

The header encodes to 176 fixed-width bytes: the 8-byte magic ``LBLK0001`` (ASCII)
followed by exactly Solidity's
``abi.encodePacked(uint64 number, uint64 firstSeq, uint64 lastSeq, uint64 sealedAt,
uint64 leafCount, bytes32 prevBlockHash, bytes32 txHeadHash, bytes32 stateRoot,
bytes32 withdrawalRoot)``; ``block_hash = sha256(encoding)``. ``withdrawal_root`` is the
root of the block's withdrawal claims (``ledger.core.withdrawals``), zero without any.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ledger.core.encoding import ZERO_HASH, sha256
from ledger.core.merkle import leaf_hash, merkle_root, sorted_leaves

_MAGIC = b"LBLK0001"
_HEADER = struct.Struct(">QQQQQ32s32s32s32s")


@dataclass(frozen=True, slots=True)
class BlockHeader:
    """A sealed block. ``hash`` is derived from the other fields."""

    number: int
    first_seq: int
    last_seq: int
    sealed_at: int
    leaf_count: int
    prev_block_hash: bytes
    tx_head_hash: bytes
    state_root: bytes
    withdrawal_root: bytes = ZERO_HASH

    def encode(self) -> bytes:
        """Fixed-width canonical encoding (see the module docstring)."""
        return _MAGIC + _HEADER.pack(
            self.number,
            self.first_seq,
            self.last_seq,
            self.sealed_at,
            self.leaf_count,
            self.prev_block_hash,
            self.tx_head_hash,
            self.state_root,
            self.withdrawal_root,
        )

    @property
    def hash(self) -> bytes:
        """``sha256`` of the encoding."""
        return sha256(self.encode()).digest()

    def to_json(self) -> dict[str, Any]:
        """JSON form with hex hashes (what ``ledger seal`` prints and proofs embed)."""
        return {
            "number": self.number,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "sealed_at": self.sealed_at,
            "leaf_count": self.leaf_count,
            "prev_block_hash": "0x" + self.prev_block_hash.hex(),
            "tx_head_hash": "0x" + self.tx_head_hash.hex(),
            "state_root": "0x" + self.state_root.hex(),
            "withdrawal_root": "0x" + self.withdrawal_root.hex(),
            "hash": "0x" + self.hash.hex(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BlockHeader:
        """Parse :meth:`to_json` output; raises ValueError/KeyError/TypeError if malformed."""

        def h32(name: str) -> bytes:
            raw = bytes.fromhex(_strip0x(data[name]))
            if len(raw) != 32:
                raise ValueError(f"{name} must be 32 bytes")
            return raw

        def u64(name: str) -> int:
            value = data[name]
            if type(value) is not int or not 0 <= value < 2**64:
                raise ValueError(f"{name} must be an unsigned 64-bit integer")
            return value

        return cls(
            number=u64("number"),
            first_seq=u64("first_seq"),
            last_seq=u64("last_seq"),
            sealed_at=u64("sealed_at"),
            leaf_count=u64("leaf_count"),
            prev_block_hash=h32("prev_block_hash"),
            tx_head_hash=h32("tx_head_hash"),
            state_root=h32("state_root"),
            withdrawal_root=h32("withdrawal_root"),
        )


def _strip0x(text: str) -> str:
    return text[2:] if text.startswith(("0x", "0X")) else text


def state_root(balances: Iterable[tuple[str, str, int]]) -> tuple[bytes, int]:
    """Merkle root over ``(account, asset, balance)`` leaves and the leaf count."""
    leaves = [leaf_hash(*leaf) for leaf in sorted_leaves(balances)]
    return merkle_root(leaves), len(leaves)


def make_block(
    previous: BlockHeader | None,
    last_seq: int,
    tx_head_hash: bytes,
    balances: Iterable[tuple[str, str, int]],
    sealed_at: int,
    withdrawal_root: bytes = ZERO_HASH,
) -> BlockHeader:
    """The next block after ``previous``, covering sequences up to ``last_seq``;
    ``withdrawal_root`` is the root of its withdrawal claims (``ledger.core.withdrawals``)."""
    first_seq = previous.last_seq + 1 if previous else 1
    assert last_seq >= first_seq, (first_seq, last_seq)
    root, count = state_root(balances)
    return BlockHeader(
        number=previous.number + 1 if previous else 1,
        first_seq=first_seq,
        last_seq=last_seq,
        sealed_at=max(sealed_at, previous.sealed_at + 1) if previous else sealed_at,
        leaf_count=count,
        prev_block_hash=previous.hash if previous else ZERO_HASH,
        tx_head_hash=tx_head_hash,
        state_root=root,
        withdrawal_root=withdrawal_root,
    )
