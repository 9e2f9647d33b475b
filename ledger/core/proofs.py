"""Inclusion proofs of one account balance against a block header.

A proof is self-contained: it carries the header, and verifying it needs nothing
else (no database): recompute the leaf, fold the siblings to the state root, and
recompute the block hash from the header fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ledger.core.amounts import Asset, format_amount
from ledger.core.blocks import BlockHeader
from ledger.core.merkle import leaf_hash, merkle_proof, sorted_leaves, verify_proof
from ledger.errors import InvalidProof, NotFound

PROOF_VERSION = 1


@dataclass(frozen=True, slots=True)
class AccountProof:
    """An account's balance in one asset, proven against ``block``."""

    account: str
    asset: Asset
    balance: int
    leaf_index: int
    siblings: tuple[bytes, ...]
    block: BlockHeader
    block_hash: bytes  # as stated in the proof; must equal the hash of the header fields

    def verify(self) -> tuple[bool, str]:
        """(valid, reason). Checks the block hash, then the Merkle path."""
        if self.block_hash != self.block.hash:
            return False, "the block hash does not match the header fields"
        leaf = leaf_hash(self.account, self.asset.code, self.balance)
        if not verify_proof(
            leaf, self.leaf_index, self.block.leaf_count, self.siblings, self.block.state_root
        ):
            return False, "the Merkle path does not lead to the block's state root"
        return True, "valid"

    def to_json(self) -> dict[str, Any]:
        """JSON form (what ``ledger proof`` prints)."""
        return {
            "version": PROOF_VERSION,
            "hash": "sha256",
            "account": self.account,
            "asset": self.asset.code,
            "scale": self.asset.scale,
            "balance": format_amount(self.balance, self.asset),
            "balance_units": str(self.balance),
            "leaf_index": self.leaf_index,
            "siblings": ["0x" + s.hex() for s in self.siblings],
            "block": self.block.to_json(),
        }

    @classmethod
    def from_json(cls, data: Any) -> AccountProof:
        """Parse a proof; InvalidProof when a field is missing or malformed."""
        try:
            if data["version"] != PROOF_VERSION or data["hash"] != "sha256":
                raise ValueError(f"unsupported proof version {data['version']!r}")
            block = BlockHeader.from_json(data["block"])
            stated_hash = bytes.fromhex(data["block"]["hash"].removeprefix("0x"))
            asset = Asset(str(data["asset"]), int(data["scale"]))
            balance = int(data["balance_units"])
            if format_amount(balance, asset) != data["balance"]:
                raise ValueError("balance and balance_units disagree")
            siblings = tuple(bytes.fromhex(s.removeprefix("0x")) for s in data["siblings"])
            if any(len(s) != 32 for s in siblings):
                raise ValueError("every sibling must be 32 bytes")
            index = data["leaf_index"]
            if type(index) is not int:
                raise ValueError("leaf_index must be an integer")
            return cls(str(data["account"]), asset, balance, index, siblings, block, stated_hash)
        except (KeyError, TypeError, ValueError, AssertionError, AttributeError) as exc:
            raise InvalidProof(f"malformed proof: {exc}") from exc


def build_proof(
    account: str,
    asset: Asset,
    balances: Sequence[tuple[str, str, int]],
    block: BlockHeader,
) -> AccountProof:
    """Proof for ``account`` from the full leaf set the block's root was built over."""
    ordered = sorted_leaves(balances)
    index = next(
        (i for i, (acc, code, _) in enumerate(ordered) if acc == account and code == asset.code),
        None,
    )
    if index is None:
        raise NotFound(f"account {account} has no {asset.code} balance in block {block.number}")
    leaves = [leaf_hash(*leaf) for leaf in ordered]
    assert len(leaves) == block.leaf_count, (len(leaves), block.leaf_count)
    siblings = tuple(merkle_proof(leaves, index))
    return AccountProof(account, asset, ordered[index][2], index, siblings, block, block.hash)
