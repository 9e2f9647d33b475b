"""Merkle tree over account balances, built to be verified on an EVM as well.

Leaf for ``(account, asset, balance)``::

    leaf = sha256(0x00 || sha256(utf8(account)) || bytes32(asset) || int256(balance))

(97 bytes in, fixed width: ``bytes32(asset)`` is the ASCII code right-padded with
zeros; ``int256`` is big-endian two's complement.) Inner node::

    node = sha256(0x01 || left || right)

The distinct prefixes keep a leaf from ever passing for a node. Leaves are sorted by
their 64-byte key ``sha256(account) || bytes32(asset)``. A level with an odd number of
nodes promotes its last node unchanged, so a proof names the leaf index and the leaf
count, which tell the verifier at which levels there is no sibling. The empty tree's
root is 32 zero bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ledger.core.encoding import ZERO_HASH, sha256

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"


def account_key(account: str) -> bytes:
    """Fixed-width key of an account id: ``sha256(utf8(account))``."""
    return sha256(account.encode("utf-8")).digest()


def asset_key(asset: str) -> bytes:
    """Asset code as ASCII, right-padded with zeros to 32 bytes."""
    raw = asset.encode("ascii")
    assert len(raw) <= 32, asset
    return raw.ljust(32, b"\x00")


def leaf_hash(account: str, asset: str, balance: int) -> bytes:
    """Hash of one ``(account, asset, balance)`` leaf."""
    return sha256(
        LEAF_PREFIX
        + account_key(account)
        + asset_key(asset)
        + balance.to_bytes(32, "big", signed=True)
    ).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Hash of an inner node."""
    return sha256(NODE_PREFIX + left + right).digest()


def sorted_leaves(balances: Iterable[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    """Leaves in canonical order: by account key, then asset key."""
    return sorted(balances, key=lambda leaf: (account_key(leaf[0]), asset_key(leaf[1])))


def merkle_levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """All levels of the tree, leaves first, root last."""
    levels = [list(leaves)]
    while len(levels[-1]) > 1:
        level = levels[-1]
        parent = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            parent.append(level[-1])
        levels.append(parent)
    return levels


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Root over leaf hashes (32 zero bytes for no leaves)."""
    if not leaves:
        return ZERO_HASH
    return merkle_levels(leaves)[-1][0]


def merkle_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """Sibling hashes from the leaf at ``index`` up to the root."""
    assert 0 <= index < len(leaves), (index, len(leaves))
    siblings: list[bytes] = []
    for level in merkle_levels(leaves)[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            siblings.append(level[sibling])
        index //= 2
    return siblings


def root_from_proof(leaf: bytes, index: int, count: int, siblings: Sequence[bytes]) -> bytes | None:
    """Fold a proof up to its root; None if the proof's shape does not fit ``count``."""
    if not 0 <= index < count:
        return None
    node, used, size = leaf, 0, count
    while size > 1:
        has_sibling = index ^ 1 < size
        if has_sibling:
            if used >= len(siblings):
                return None
            sibling = siblings[used]
            used += 1
            node = node_hash(sibling, node) if index & 1 else node_hash(node, sibling)
        index //= 2
        size = (size + 1) // 2
    return node if used == len(siblings) else None


def verify_proof(
    leaf: bytes, index: int, count: int, siblings: Sequence[bytes], root: bytes
) -> bool:
    """True when the proof leads from ``leaf`` to ``root``."""
    return root_from_proof(leaf, index, count, siblings) == root
