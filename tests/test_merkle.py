"""Merkle tree over balances and the offline account proofs built on it (pure, no database).

Covers: every leaf of trees of 1..33 leaves proves against ``merkle_root``; any flipped byte,
wrong index, wrong shape or extra/missing sibling is rejected; a leaf never passes for an
inner node; known answers computed here with hashlib only; and the ``AccountProof`` JSON
round trip, where any mutation either fails to parse or fails to verify.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.core.amounts import USDC, format_amount
from ledger.core.blocks import BlockHeader, make_block
from ledger.core.merkle import (
    leaf_hash,
    merkle_levels,
    merkle_proof,
    merkle_root,
    node_hash,
    root_from_proof,
    sorted_leaves,
    verify_proof,
)
from ledger.core.proofs import AccountProof, build_proof
from ledger.errors import InvalidProof, NotFound

ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20
CAROL = "0x" + "c3" * 20
ZERO = b"\x00" * 32
SIZES = range(1, 34)


def fake_leaves(count: int, salt: int = 0) -> list[bytes]:
    """Distinct, arbitrary 32-byte leaf hashes."""
    return [hashlib.sha256(f"leaf-{salt}-{i}".encode()).digest() for i in range(count)]


def flip(data: bytes, position: int, mask: int = 0x01) -> bytes:
    """``data`` with one byte changed."""
    changed = bytearray(data)
    changed[position] ^= mask
    return bytes(changed)


def path_shape(index: int, count: int) -> list[tuple[bool, int]]:
    """Independent model of a proof's shape: per level, (has a sibling, is right child)."""
    shape = []
    while count > 1:
        shape.append((index ^ 1 < count, index & 1))
        index //= 2
        count = (count + 1) // 2
    return shape


# --------------------------------------------------------------------------- known answers
def reference_leaf(account: str, asset: str, balance: int) -> bytes:
    """The documented leaf encoding, written out independently of ledger.core.merkle."""
    asset_raw = asset.encode("ascii")
    padded_asset = asset_raw + b"\x00" * (32 - len(asset_raw))
    twos_complement = (balance % (1 << 256)).to_bytes(32, "big")
    preimage = b"\x00" + hashlib.sha256(account.encode("utf-8")).digest()
    preimage += padded_asset + twos_complement
    assert len(preimage) == 97
    return hashlib.sha256(preimage).digest()


def reference_node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


@pytest.mark.parametrize(
    ("account", "asset", "balance"),
    [
        (ALICE, "USDC", 60_250_000),
        (ALICE, "USDC", 0),
        (ALICE, "USDC", -1),
        ("system:bridge", "USDC", -100_000_000),
        (f"{BOB}:isolated-1", "USDC", 2**63 - 1),
        ("system:fees", "BTC-PERP", -(2**63)),
        (CAROL, "X" * 32, 2**255 - 1),
        (CAROL, "A", -(2**255)),
        ("ünïcode", "USDC", 5),
    ],
)
def test_leaf_hash_known_answer(account: str, asset: str, balance: int) -> None:
    assert leaf_hash(account, asset, balance) == reference_leaf(account, asset, balance)


def test_leaf_hash_literal_vectors() -> None:
    # Computed once with hashlib alone (see reference_leaf); pins the encoding forever.
    assert (
        leaf_hash(ALICE, "USDC", 60_250_000).hex()
        == "1546b74dd5e10d33249beff7b1f650b186ae95bde565bddbec5ba785497772fe"
    )
    assert (
        leaf_hash(ALICE, "USDC", -1).hex()
        == "e001e00a3071efc88b5031bc8d7dcb1eaa0dca9fab80ff0948225996595176d5"
    )


def test_negative_balance_is_twos_complement_not_sign_magnitude() -> None:
    minus_one = reference_leaf(ALICE, "USDC", -1)
    sign_magnitude = hashlib.sha256(
        b"\x00"
        + hashlib.sha256(ALICE.encode()).digest()
        + b"USDC".ljust(32, b"\x00")
        + b"\x80"
        + b"\x00" * 30
        + b"\x01"
    ).digest()
    assert leaf_hash(ALICE, "USDC", -1) == minus_one != sign_magnitude
    assert leaf_hash(ALICE, "USDC", -1) != leaf_hash(ALICE, "USDC", 1)


def test_balance_outside_int256_is_refused() -> None:
    with pytest.raises(OverflowError):
        leaf_hash(ALICE, "USDC", 2**255)
    with pytest.raises(OverflowError):
        leaf_hash(ALICE, "USDC", -(2**255) - 1)


def test_node_and_root_known_answers() -> None:
    a, b, c, d, e = fake_leaves(5)
    assert node_hash(a, b) == reference_node(a, b)
    assert merkle_root([]) == ZERO
    assert merkle_root([a]) == a
    assert merkle_root([a, b]) == reference_node(a, b)
    # An odd node is promoted unchanged (not hashed with itself).
    assert merkle_root([a, b, c]) == reference_node(reference_node(a, b), c)
    ab, cd = reference_node(a, b), reference_node(c, d)
    assert merkle_root([a, b, c, d]) == reference_node(ab, cd)
    assert merkle_root([a, b, c, d, e]) == reference_node(reference_node(ab, cd), e)


def test_leaves_are_sorted_by_account_key_then_asset() -> None:
    rows = [(ALICE, "USDC", 1), (BOB, "USDC", 2), (CAROL, "USDC", 3), (ALICE, "BTC", 4)]
    expected = sorted(
        rows,
        key=lambda r: (hashlib.sha256(r[0].encode()).digest(), r[1].encode().ljust(32, b"\0")),
    )
    assert sorted_leaves(rows) == expected
    assert sorted_leaves(reversed(rows)) == expected


# --------------------------------------------------------------------------- tree sizes 1..33
def all_proofs() -> Iterator[tuple[list[bytes], bytes, int, list[bytes]]]:
    for size in SIZES:
        leaves = fake_leaves(size, size)
        root = merkle_root(leaves)
        for index in range(size):
            yield leaves, root, index, merkle_proof(leaves, index)


def test_every_leaf_of_every_size_verifies() -> None:
    checked = 0
    for leaves, root, index, siblings in all_proofs():
        size = len(leaves)
        assert len(siblings) == sum(has for has, _ in path_shape(index, size))
        assert verify_proof(leaves[index], index, size, siblings, root)
        assert root_from_proof(leaves[index], index, size, siblings) == root
        checked += 1
    assert checked == sum(SIZES)


def test_any_flipped_byte_fails() -> None:
    for leaves, root, index, siblings in all_proofs():
        size, leaf = len(leaves), leaves[index]
        for position in range(32):
            for mask in (0x01, 0x80):
                assert not verify_proof(flip(leaf, position, mask), index, size, siblings, root)
                assert not verify_proof(leaf, index, size, siblings, flip(root, position, mask))
                for k in range(len(siblings)):
                    bad = list(siblings)
                    bad[k] = flip(bad[k], position, mask)
                    assert not verify_proof(leaf, index, size, bad, root)


def test_wrong_index_fails() -> None:
    for leaves, root, index, siblings in all_proofs():
        size = len(leaves)
        for other in range(-2, size + 3):
            if other != index:
                assert not verify_proof(leaves[index], other, size, siblings, root), (
                    size,
                    index,
                    other,
                )


def test_wrong_leaf_count_fails_unless_the_path_shape_is_identical() -> None:
    """The count only tells the verifier where siblings are missing. A wrong count whose path
    has the same shape folds to the same root (e.g. leaf 0 of 4 with count 3), so it cannot
    fail there; every count that changes the shape must fail. The count is bound through the
    block hash instead (see test_leaf_count_is_bound_by_the_block_hash)."""
    for leaves, root, index, siblings in all_proofs():
        size = len(leaves)
        for count in [-1, 0, *range(1, 2 * size + 3)]:
            if count == size:
                continue
            same_shape = count > index and path_shape(index, count) == path_shape(index, size)
            assert verify_proof(leaves[index], index, count, siblings, root) == same_shape


def test_leaf_count_that_changes_depth_always_fails() -> None:
    for leaves, root, index, siblings in all_proofs():
        size = len(leaves)
        depth = len(path_shape(index, size))
        for count in (2 ** (depth + 1), 2 ** (depth + 1) + 1, max(1, 2 ** (depth - 1))):
            if count != size and len(path_shape(index, count)) != depth:
                assert not verify_proof(leaves[index], index, count, siblings, root)


def test_extra_or_missing_sibling_fails() -> None:
    for leaves, root, index, siblings in all_proofs():
        size, leaf = len(leaves), leaves[index]
        for extra in (ZERO, root, leaf, *siblings[:1]):
            for position in range(len(siblings) + 1):
                longer = [*siblings[:position], extra, *siblings[position:]]
                assert not verify_proof(leaf, index, size, longer, root)
        for k in range(len(siblings)):
            shorter = siblings[:k] + siblings[k + 1 :]
            assert not verify_proof(leaf, index, size, shorter, root)
        if len(siblings) >= 2:
            assert not verify_proof(leaf, index, size, list(reversed(siblings)), root)


def test_an_inner_node_cannot_be_proven_as_a_leaf() -> None:
    """Every inner node of every tree, claimed as a leaf at any index with the siblings
    above it (the 'shorter proof' attack), fails against the true leaf count."""
    for size in range(2, 34):
        leaves = fake_leaves(size, 1000 + size)
        levels = merkle_levels(leaves)
        root = levels[-1][0]
        for height in range(1, len(levels) - 1):
            for position, node in enumerate(levels[height]):
                if node in leaves:
                    continue  # a promoted odd leaf is a leaf, and rightly provable
                # The siblings the node has from its own level upwards.
                upper = []
                idx = position
                for level in levels[height:-1]:
                    if idx ^ 1 < len(level):
                        upper.append(level[idx ^ 1])
                    idx //= 2
                for index in range(size):
                    assert not verify_proof(node, index, size, upper, root)


def test_leaf_and_node_preimages_are_domain_separated() -> None:
    a, b = fake_leaves(2)
    # A leaf preimage is 97 bytes starting 0x00; a node preimage 65 bytes starting 0x01:
    # no (account, asset, balance) can hash to an inner node without a SHA-256 collision.
    node_preimage = b"\x01" + a + b
    assert node_hash(a, b) == hashlib.sha256(node_preimage).digest()
    assert node_hash(a, b) != hashlib.sha256(a + b).digest()
    leaf = leaf_hash(ALICE, "USDC", 1)
    assert (
        leaf
        != hashlib.sha256(
            hashlib.sha256(ALICE.encode()).digest()
            + b"USDC".ljust(32, b"\0")
            + (1).to_bytes(32, "big")
        ).digest()
    )
    # A two-leaf tree's root is never a leaf of the same data.
    assert merkle_root([a, b]) not in (a, b)


def test_single_leaf_tree_needs_no_siblings() -> None:
    (leaf,) = fake_leaves(1)
    assert merkle_proof([leaf], 0) == []
    assert verify_proof(leaf, 0, 1, [], leaf)
    assert not verify_proof(leaf, 0, 1, [leaf], leaf)
    assert not verify_proof(leaf, 1, 1, [], leaf)
    assert not verify_proof(leaf, 0, 0, [], leaf)


@settings(max_examples=200, deadline=None)
@given(
    leaves=st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=80, unique=True),
    data=st.data(),
)
def test_random_trees_prove_every_drawn_leaf(leaves: list[bytes], data: st.DataObject) -> None:
    size = len(leaves)
    index = data.draw(st.integers(0, size - 1), label="index")
    root = merkle_root(leaves)
    siblings = merkle_proof(leaves, index)
    assert verify_proof(leaves[index], index, size, siblings, root)
    if size > 1:
        other = data.draw(st.integers(0, size - 1).filter(lambda i: i != index), label="other")
        assert not verify_proof(leaves[other], index, size, siblings, root)
        assert not verify_proof(leaves[index], other, size, siblings, root)
    position = data.draw(st.integers(0, 31), label="byte")
    assert not verify_proof(flip(leaves[index], position), index, size, siblings, root)
    if siblings:
        k = data.draw(st.integers(0, len(siblings) - 1), label="sibling")
        bad = list(siblings)
        bad[k] = flip(bad[k], position)
        assert not verify_proof(leaves[index], index, size, bad, root)
        assert not verify_proof(leaves[index], index, size, siblings[:-1], root)
    assert not verify_proof(leaves[index], index, size, [*siblings, ZERO], root)


# --------------------------------------------------------------------------- AccountProof
BALANCES: list[tuple[str, str, int]] = [
    ("system:bridge", "USDC", -160_250_000),
    ("system:fees", "USDC", 1_000),
    (ALICE, "USDC", 60_250_000),
    (BOB, "USDC", 99_999_000),
    (f"{BOB}:isolated-1", "USDC", 0),
    *[("0x" + f"{i:040x}", "USDC", i * 1_000_001) for i in range(1, 9)],
]
HEAD = hashlib.sha256(b"tx head").digest()


def make_header(balances: list[tuple[str, str, int]] = BALANCES) -> BlockHeader:
    first = make_block(None, 5, hashlib.sha256(b"first").digest(), balances[:3], 1_000)
    return make_block(first, 42, HEAD, balances, 2_000)


def proof_json(account: str = ALICE) -> dict[str, Any]:
    proof = build_proof(account, USDC, BALANCES, make_header())
    data: dict[str, Any] = json.loads(json.dumps(proof.to_json()))
    return data


def outcome(data: Any) -> bool:
    """True when ``data`` parses as a proof and verifies."""
    try:
        proof = AccountProof.from_json(data)
    except InvalidProof:
        return False
    return proof.verify()[0]


def test_proof_json_round_trip_for_every_account() -> None:
    header = make_header()
    assert header.number == 2 and header.leaf_count == len(BALANCES)
    for account, _, balance in BALANCES:
        proof = build_proof(account, USDC, BALANCES, header)
        assert proof.balance == balance
        assert proof.verify() == (True, "valid")
        text = json.dumps(proof.to_json())
        parsed = AccountProof.from_json(json.loads(text))
        assert parsed == proof
        assert parsed.verify() == (True, "valid")


def test_proof_json_shape() -> None:
    data = proof_json(ALICE)
    assert set(data) == {
        "version",
        "hash",
        "account",
        "asset",
        "scale",
        "balance",
        "balance_units",
        "leaf_index",
        "siblings",
        "block",
    }
    assert (data["version"], data["hash"], data["account"]) == (1, "sha256", ALICE)
    assert (data["asset"], data["scale"]) == ("USDC", 6)
    assert (data["balance"], data["balance_units"]) == ("60.25", "60250000")
    assert data["block"] == make_header().to_json()
    assert all(s.startswith("0x") and len(s) == 66 for s in data["siblings"])


def test_negative_system_balance_is_provable() -> None:
    data = proof_json("system:bridge")
    assert (data["balance"], data["balance_units"]) == ("-160.25", "-160250000")
    assert outcome(data)


def test_proof_of_an_absent_account_is_not_found() -> None:
    with pytest.raises(NotFound, match="no USDC balance"):
        build_proof(CAROL, USDC, BALANCES, make_header())


Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = data
        for name in parents:
            target = target[name]
        target[last] = value

    return mutate


def _delete(path: str) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = data
        for name in parents:
            target = target[name]
        del target[last]

    return mutate


def _flip_hex(text: str, nibble: int = -1) -> str:
    digits = list(text)
    digits[nibble] = "0" if digits[nibble] != "0" else "1"
    return "".join(digits)


def _with(fn: Callable[[dict[str, Any]], None]) -> Mutation:
    return fn


def _units(delta: int, keep_display: bool) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        units = int(data["balance_units"]) + delta
        data["balance_units"] = str(units)
        if not keep_display:
            data["balance"] = format_amount(units, USDC)

    return mutate


def _sibling_flip(k: int, nibble: int) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        data["siblings"][k] = _flip_hex(data["siblings"][k], nibble)

    return mutate


def _block_field(name: str, change: Callable[[Any], Any]) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        data["block"][name] = change(data["block"][name])

    return mutate


def _mutations() -> dict[str, Mutation]:
    good = proof_json(ALICE)
    n_siblings = len(good["siblings"])
    assert n_siblings >= 3
    mutations: dict[str, Mutation] = {
        "balance_units +1 (display kept)": _units(1, keep_display=True),
        "balance_units +1 (display updated)": _units(1, keep_display=False),
        "balance_units -1 (display updated)": _units(-1, keep_display=False),
        "balance_units negated": _units(-2 * 60_250_000, keep_display=False),
        "balance_units not a number": _set("balance_units", "lots"),
        "balance_units missing": _delete("balance_units"),
        "balance display": _set("balance", "60.26"),
        "balance display with more zeros": _set("balance", "60.250"),
        "balance missing": _delete("balance"),
        "account is another leaf": _set("account", BOB),
        "account absent from tree": _set("account", CAROL),
        "account upper-case spelling": _set("account", "0x" + ALICE[2:].upper()),
        "account missing": _delete("account"),
        "asset other code": _set("asset", "USDT"),
        "asset lower-case": _set("asset", "usdc"),
        "asset missing": _delete("asset"),
        "scale": _set("scale", 7),
        "scale missing": _delete("scale"),
        "version": _set("version", 2),
        "hash algorithm": _set("hash", "keccak256"),
        "leaf_index +1": _with(lambda d: d.update(leaf_index=d["leaf_index"] + 1)),
        "leaf_index -1": _set("leaf_index", -1),
        "leaf_index = leaf_count": _set("leaf_index", len(BALANCES)),
        "leaf_index as string": _with(lambda d: d.update(leaf_index=str(d["leaf_index"]))),
        "leaf_index as float": _with(lambda d: d.update(leaf_index=float(d["leaf_index"]))),
        "leaf_index as bool": _set("leaf_index", False),
        "leaf_index missing": _delete("leaf_index"),
        "siblings extra zero": _with(lambda d: d["siblings"].append("0x" + "00" * 32)),
        "siblings missing last": _with(lambda d: d["siblings"].pop()),
        "siblings missing first": _with(lambda d: d["siblings"].pop(0)),
        "siblings reversed": _with(lambda d: d["siblings"].reverse()),
        "siblings empty": _set("siblings", []),
        "sibling 31 bytes": _with(lambda d: d["siblings"].__setitem__(0, d["siblings"][0][:-2])),
        "sibling not hex": _with(lambda d: d["siblings"].__setitem__(0, "0x" + "zz" * 32)),
        "siblings missing": _delete("siblings"),
        "block missing": _delete("block"),
        "block hash missing": _delete("block.hash"),
        "block hash": _with(lambda d: d["block"].update(hash=_flip_hex(d["block"]["hash"]))),
    }
    for k in range(n_siblings):
        for nibble in (2, 40, -1):
            mutations[f"sibling {k} nibble {nibble}"] = _sibling_flip(k, nibble)
    for name in ("number", "first_seq", "last_seq", "sealed_at", "leaf_count"):
        mutations[f"block {name} +1"] = _block_field(name, lambda v: v + 1)
        mutations[f"block {name} -1"] = _block_field(name, lambda v: v - 1)
        mutations[f"block {name} as string"] = _block_field(name, str)
        mutations[f"block {name} missing"] = _delete(f"block.{name}")
    for name in ("prev_block_hash", "tx_head_hash", "state_root", "withdrawal_root"):
        mutations[f"block {name} first nibble"] = _block_field(name, lambda v: _flip_hex(v, 2))
        mutations[f"block {name} last nibble"] = _block_field(name, _flip_hex)
        mutations[f"block {name} truncated"] = _block_field(name, lambda v: v[:-2])
    return mutations


MUTATIONS = _mutations()


def test_unmutated_proof_is_valid() -> None:
    assert outcome(proof_json(ALICE))


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_any_json_mutation_is_rejected(name: str) -> None:
    data = proof_json(ALICE)
    original = copy.deepcopy(data)
    MUTATIONS[name](data)
    assert json.dumps(data) != json.dumps(original), "the mutation must change the JSON"
    assert not outcome(data)


@pytest.mark.parametrize("data", [None, [], "proof", 42, {}, {"version": 1}])
def test_non_proof_json_raises_invalid_proof(data: Any) -> None:
    with pytest.raises(InvalidProof, match="malformed proof"):
        AccountProof.from_json(data)


def _rehash(block: dict[str, Any]) -> None:
    block["hash"] = "0x" + BlockHeader.from_json(block).hash.hex()


def test_forged_state_root_with_recomputed_block_hash_fails_verification() -> None:
    data = proof_json(ALICE)
    data["block"]["state_root"] = _flip_hex(data["block"]["state_root"])
    _rehash(data["block"])
    proof = AccountProof.from_json(data)  # self-consistent header, wrong root
    assert proof.verify()[0] is False


def test_forged_balance_with_consistent_fields_fails_verification() -> None:
    data = proof_json(ALICE)
    data["balance_units"] = str(1_000_000 * 10**6)
    data["balance"] = "1000000.00"
    proof = AccountProof.from_json(data)
    valid, reason = proof.verify()
    assert not valid and "state root" in reason


def test_leaf_count_is_bound_by_the_block_hash() -> None:
    """Because the count alone is sometimes ambiguous (see the Merkle tests), it must be
    covered by the block hash: changing it without re-hashing fails verification."""
    data = proof_json(ALICE)
    data["block"]["leaf_count"] += 1
    assert AccountProof.from_json(data).verify() == (
        False,
        "the block hash does not match the header fields",
    )


@settings(max_examples=60, deadline=None)
@given(
    balances=st.dictionaries(
        st.integers(1, 10**6).map(lambda i: "0x" + f"{i:040x}"),
        st.integers(-(2**63), 2**63 - 1),
        min_size=1,
        max_size=40,
    ),
    data=st.data(),
)
def test_random_ledgers_prove_every_drawn_account(
    balances: dict[str, int], data: st.DataObject
) -> None:
    rows = [(account, "USDC", units) for account, units in balances.items()]
    header = make_block(None, 1, HEAD, rows, 1)
    account = data.draw(st.sampled_from(sorted(balances)), label="account")
    proof = build_proof(account, USDC, rows, header)
    as_json = json.loads(json.dumps(proof.to_json()))
    assert AccountProof.from_json(as_json) == proof
    assert outcome(as_json)
    as_json["balance_units"] = str(balances[account] ^ 1)
    as_json["balance"] = format_amount(balances[account] ^ 1, USDC)
    assert not outcome(as_json)
