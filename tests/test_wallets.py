"""Wallets and signatures: key derivation, interoperability with plain starknet-py and
eth-account, refusal of every tampered, replayed or unauthorised envelope (with nothing
written), and an end-to-end run whose audit re-verifies every signature.

Most tests share one ledger per store (module scope: a PostgreSQL database costs most of a
second). A refused envelope writes nothing, which every refusal checks; accepted actions
take the owner's next nonce, so the tests do not depend on each other's order. The last
test audits the shared ledger: every signature the other tests wrote still verifies.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.engine import Connection
from starknet_py.constants import EC_ORDER
from starknet_py.hash.address import compute_address
from starknet_py.hash.utils import (
    message_signature,
    private_to_stark_key,
    verify_message_signature,
)
from starknet_py.utils.typed_data import TypedData

from ledger import Ledger, LedgerError
from ledger.core import eip712, envelopes, operations, snip12, stark
from ledger.core.accounts import BRIDGE, WITHDRAWALS, normalize_address, to_checksum_address
from ledger.core.encoding import canonical_json, chain_hash
from ledger.errors import (
    ActionExpired,
    BadSignature,
    InvalidAccount,
    InvalidAmount,
    MalformedEnvelope,
    MalleableSignature,
    NonceReused,
    NotOnboarded,
    NotOwner,
    UnknownOperator,
    WrongDomain,
)
from ledger.store.database import make_engine
from ledger.wallet import Wallet
from tests.conftest import (
    ALICE,
    ALICE_WALLET,
    BOB,
    BOB_WALLET,
    CAROL,
    CAROL_WALLET,
    OPERATOR,
    STORES,
    drop_postgres_database,
    new_postgres_database,
    open_book,
)
from tests.conftest import test_wallet as make_wallet

UNIT = 1_000_000  # one USDC in base units
FUNDS = 1_000_000 * UNIT
L1_CHAIN_ID = 31337  # the genesis default (local EVM devnets)
L2_DOMAIN = {"name": "ledger", "version": "1", "chainId": "SN_SEPOLIA", "revision": "1"}
# Never onboarded anywhere in this module.
DAVE_WALLET = make_wallet("dave")
DAVE = DAVE_WALLET.address


def key_of(name: str) -> bytes:
    """The private key conftest's ``test_wallet(name)`` holds."""
    return hashlib.sha256(f"ledger-test-wallet-{name}".encode()).digest()


# ------------------------------------------------------------------ independent reference
# What a client written from the specification alone (wallets-and-chains.md) would do, with
# plain eth-account, hashlib and starknet-py: nothing from ledger.core.
EIP712_DOMAIN = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
]
STARKNET_DOMAIN = [
    {"name": "name", "type": "shortstring"},
    {"name": "version", "type": "shortstring"},
    {"name": "chainId", "type": "shortstring"},
    {"name": "revision", "type": "shortstring"},
]
NONCE_EXPIRY = [{"name": "nonce", "type": "u128"}, {"name": "expiry", "type": "timestamp"}]
ACTION_SCHEMAS = {
    "transfer": (
        "Transfer",
        [
            {"name": "from", "type": "string"},
            {"name": "to", "type": "string"},
            {"name": "amount", "type": "u128"},
            *NONCE_EXPIRY,
        ],
    ),
    "withdraw": (
        "Withdraw",
        [{"name": "account", "type": "string"}, {"name": "amount", "type": "u128"}, *NONCE_EXPIRY],
    ),
}


def eip712_message(primary: str, fields: list[dict[str, str]], message: dict[str, Any]) -> dict:
    return {
        "types": {"EIP712Domain": EIP712_DOMAIN, primary: fields},
        "primaryType": primary,
        "domain": {"name": "ledger", "version": "1", "chainId": L1_CHAIN_ID},
        "message": message,
    }


def stark_key_request(chain_id: int = L1_CHAIN_ID) -> dict[str, Any]:
    request = eip712_message("Constant", [{"name": "action", "type": "string"}], {})
    request["domain"]["chainId"] = chain_id
    request["message"] = {"action": "STARK Key"}
    return request


def onboarding_request(owner: str, public_key: int, account: int) -> dict[str, Any]:
    fields = [
        {"name": "account", "type": "address"},
        {"name": "starkPublicKey", "type": "uint256"},
        {"name": "starkAccount", "type": "uint256"},
    ]
    message = {"account": owner, "starkPublicKey": public_key, "starkAccount": account}
    return eip712_message("Onboarding", fields, message)


def snip12_message(
    primary: str, fields: list[dict[str, str]], message: dict[str, Any], domain: dict | None = None
) -> dict[str, Any]:
    return {
        "types": {"StarknetDomain": STARKNET_DOMAIN, primary: fields},
        "primaryType": primary,
        "domain": domain or L2_DOMAIN,
        "message": message,
    }


def action_typed_data(envelope: dict[str, Any]) -> dict[str, Any]:
    primary, fields = ACTION_SCHEMAS[envelope["action"]]
    return snip12_message(primary, fields, envelope["message"], envelope["domain"])


def padded_hex(value: int) -> str:
    digits = f"{value:x}"
    return digits if len(digits) % 2 == 0 else "0" + digits


def grind(seed: int) -> tuple[int, int]:
    """StarkEx key grinding: (key, number of rejected candidates)."""
    limit = 2**256 - 2**256 % EC_ORDER
    for index in itertools.count():
        data = bytes.fromhex(padded_hex(seed) + padded_hex(index))
        candidate = int(hashlib.sha256(data).hexdigest(), 16)
        if candidate < limit:
            return candidate % EC_ORDER, index
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Derived:
    l1_key: bytes
    address: str
    r: int
    grind_index: int
    private_key: int
    public_key: int
    account: int


def derive(l1_key: bytes, chain_id: int = L1_CHAIN_ID) -> Derived:
    signed = Account.sign_message(
        encode_typed_data(full_message=stark_key_request(chain_id)), l1_key
    )
    r = int.from_bytes(bytes(signed.signature)[:32], "big")
    private_key, index = grind(r)
    public_key = private_to_stark_key(private_key)
    account = compute_address(
        class_hash=stark.ACCOUNT_CLASS_HASH,
        constructor_calldata=[public_key],
        salt=public_key,
    )
    address = Account.from_key(l1_key).address.lower()
    return Derived(l1_key, address, r, index, private_key, public_key, account)


def sign_snip12(typed: dict[str, Any], who: Derived) -> list[str]:
    digest = TypedData.from_dict(typed).message_hash(who.account)
    r, s = message_signature(digest, who.private_key)
    return [f"{r:#x}", f"{s:#x}"]


def plain_action(who: Derived, action: str, message: dict[str, Any]) -> dict[str, Any]:
    """A user action envelope made with starknet-py alone (not our Wallet)."""
    primary, fields = ACTION_SCHEMAS[action]
    return {
        "format": "ledger.action/1",
        "action": action,
        "domain": dict(L2_DOMAIN),
        "message": message,
        "signer": {
            "account": who.address,
            "stark_public_key": f"{who.public_key:#x}",
            "stark_account": f"{who.account:#x}",
        },
        "signature": sign_snip12(snip12_message(primary, fields, message), who),
    }


def plain_onboarding(who: Derived) -> dict[str, Any]:
    """An onboarding envelope made with eth-account and starknet-py alone."""
    l1 = Account.sign_message(
        encode_typed_data(
            full_message=onboarding_request(who.address, who.public_key, who.account)
        ),
        who.l1_key,
    )
    l2 = snip12_message(
        "Onboarding", [{"name": "account", "type": "ContractAddress"}], {"account": who.address}
    )
    return {
        "format": "ledger.onboarding/1",
        "account": who.address,
        "stark_public_key": f"{who.public_key:#x}",
        "stark_account": f"{who.account:#x}",
        "l1_chain_id": L1_CHAIN_ID,
        "l1_signature": "0x" + bytes(l1.signature).hex(),
        "domain": dict(L2_DOMAIN),
        "l2_signature": sign_snip12(l2, who),
    }


# ------------------------------------------------------------------ 2. key derivation
GRIND_NAMES = [f"grind-{i}" for i in range(12)]  # grind-6: odd-length r; grind-10: ground once


def test_key_derivation_is_deterministic() -> None:
    key = key_of("alice")
    first, second = Wallet(key), Wallet(key)
    assert first.address == second.address == ALICE
    assert first.stark_private_key == second.stark_private_key == ALICE_WALLET.stark_private_key
    assert first.stark_public_key == second.stark_public_key == ALICE_WALLET.stark_public_key
    assert first.stark_account == second.stark_account == ALICE_WALLET.stark_account
    assert first.signer_json() == second.signer_json()


@pytest.mark.parametrize("name", ["operator", "alice", "bob", "carol", *GRIND_NAMES])
def test_key_derivation_matches_an_independent_implementation(name: str) -> None:
    wallet, reference = make_wallet(name), derive(key_of(name))
    assert wallet.address == reference.address
    assert wallet.stark_private_key == reference.private_key
    assert wallet.stark_public_key == reference.public_key
    assert wallet.stark_account == reference.account
    assert wallet.signer_json() == {
        "account": reference.address,
        "stark_public_key": f"{reference.public_key:#x}",
        "stark_account": f"{reference.account:#x}",
    }


def test_the_derivation_cases_cover_grinding_and_odd_length_r() -> None:
    """The wallets above include one whose first candidate is rejected and one whose r
    has an odd number of hex digits (the padding case)."""
    derived = [derive(key_of(name)) for name in GRIND_NAMES]
    assert any(d.grind_index >= 1 for d in derived)
    assert any(len(f"{d.r:x}") % 2 for d in derived)


@pytest.mark.parametrize(
    ("seed", "rejected"),
    [(26, 1), (1474, 2), (0xABC, None), (1, None), (2**256 - 1, None)],
)
def test_grind_key_matches_the_reference(seed: int, rejected: int | None) -> None:
    key, index = grind(seed)
    assert stark.grind_key(seed) == key
    if rejected is not None:
        assert index == rejected


def test_the_l1_chain_id_is_part_of_the_derivation() -> None:
    key = key_of("alice")
    mainnet = Wallet(key, l1_chain_id=1)
    reference = derive(key, chain_id=1)
    assert (mainnet.stark_private_key, mainnet.stark_account) == (
        reference.private_key,
        reference.account,
    )
    assert mainnet.stark_private_key != ALICE_WALLET.stark_private_key


# ------------------------------------------------------------------ 1. wallet ↔ plain libraries
DOMAIN = snip12.Domain("ledger", "1", "SN_SEPOLIA")


def _stark(signature: list[str]) -> list[int]:
    return [int(part, 16) for part in signature]


def test_wallet_action_signatures_verify_with_plain_starknet_py() -> None:
    envelopes_ = [
        ALICE_WALLET.transfer(ALICE, BOB, "12.5", DOMAIN, nonce=7, expiry=2_000_000_000),
        ALICE_WALLET.transfer(f"{ALICE}:margin", ALICE, 3, DOMAIN, nonce=8, expiry=2_000_000_000),
        BOB_WALLET.withdraw(BOB, "0.000001", DOMAIN, nonce=1, expiry=2_000_000_000),
    ]
    for envelope in envelopes_:
        wallet = ALICE_WALLET if envelope["signer"]["account"] == ALICE else BOB_WALLET
        digest = TypedData.from_dict(action_typed_data(envelope)).message_hash(
            int(envelope["signer"]["stark_account"], 16)
        )
        public_key = int(envelope["signer"]["stark_public_key"], 16)
        assert verify_message_signature(digest, _stark(envelope["signature"]), public_key)
        assert not verify_message_signature(digest + 1, _stark(envelope["signature"]), public_key)
        assert public_key == private_to_stark_key(wallet.stark_private_key)
    # Bit-identical to starknet-py's own signing (same RFC 6979 nonce), as stark.py claims.
    first = envelopes_[0]
    digest = TypedData.from_dict(action_typed_data(first)).message_hash(ALICE_WALLET.stark_account)
    assert list(message_signature(digest, ALICE_WALLET.stark_private_key)) == _stark(
        first["signature"]
    )


def test_wallet_onboarding_verifies_with_plain_libraries() -> None:
    envelope = CAROL_WALLET.onboarding(DOMAIN)
    request = onboarding_request(CAROL, CAROL_WALLET.stark_public_key, CAROL_WALLET.stark_account)
    signer = Account.recover_message(
        encode_typed_data(full_message=request),
        signature=bytes.fromhex(envelope["l1_signature"][2:]),
    )
    assert signer == to_checksum_address(CAROL)
    typed = snip12_message(
        "Onboarding", [{"name": "account", "type": "ContractAddress"}], {"account": CAROL}
    )
    digest = TypedData.from_dict(typed).message_hash(CAROL_WALLET.stark_account)
    assert verify_message_signature(
        digest, _stark(envelope["l2_signature"]), CAROL_WALLET.stark_public_key
    )


def test_operator_signatures_recover_with_plain_eth_account() -> None:
    unsigned = operations.deposit(ALICE, 5 * UNIT, "dep-1")
    signed = OPERATOR.sign_system(unsigned)
    auth = json.loads(signed.metadata)["auth"]
    assert auth["operator"] == OPERATOR.address
    fields = [
        {"name": "kind", "type": "string"},
        {"name": "key", "type": "string"},
        {"name": "digest", "type": "bytes32"},
    ]
    event = {"kind": "deposit", "key": "dep-1", "digest": unsigned.digest()}
    signer = Account.recover_message(
        encode_typed_data(full_message=eip712_message("SystemEvent", fields, event)),
        signature=bytes.fromhex(auth["signature"][2:]),
    )
    assert signer == to_checksum_address(OPERATOR.address)


def test_the_stark_key_request_is_signed_by_the_l1_key() -> None:
    signature = ALICE_WALLET.sign_l1(stark_key_request())
    message = encode_typed_data(full_message=stark_key_request())
    assert Account.recover_message(message, signature=signature) == to_checksum_address(ALICE)
    assert stark.private_key_from_l1_signature(signature) == ALICE_WALLET.stark_private_key


# ------------------------------------------------------------------ shared ledger
@pytest.fixture(scope="module", params=STORES)
def shared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Ledger]:
    """One ledger per store: ALICE, BOB, CAROL onboarded and funded, BOB:sub funded."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('wallets')}/ledger.db"
    else:
        url = new_postgres_database()
    book = open_book(url)
    try:
        funding = [(owner, f"fund/{owner}") for owner in (ALICE, BOB, CAROL, f"{BOB}:sub")]
        book.submit([OPERATOR.sign_system(operations.deposit(a, FUNDS, key)) for a, key in funding])
        yield book
    finally:
        book.close()
        if request.param != "sqlite":
            drop_postgres_database(url)


def snapshot(book: Ledger) -> tuple[Any, ...]:
    """Everything a write would change: chain head, signers' state, balances."""
    store = book.store
    return store.head(), store.auth_projection(), store.current_balances()


Errors = type[LedgerError] | tuple[type[LedgerError], ...]


def refuse(book: Ledger, error: Errors, attempt: Callable[[], object]) -> LedgerError:
    """``attempt`` raises exactly ``error`` (or one of them) and writes nothing."""
    expected = error if isinstance(error, tuple) else (error,)
    before = snapshot(book)
    with pytest.raises(LedgerError) as caught:
        attempt()
    assert type(caught.value) in expected, (
        f"expected {'/'.join(e.__name__ for e in expected)}, "
        f"got {type(caught.value).__name__}: {caught.value}"
    )
    assert snapshot(book) == before, "a refused envelope wrote something"
    return caught.value


def refuse_envelope(book: Ledger, error: Errors, envelope: Any) -> LedgerError:
    return refuse(book, error, lambda: book.submit_signed(envelope))


def nonce(book: Ledger, wallet: Wallet) -> int:
    return book.store.last_nonce(wallet.address) + 1


def transfer(book: Ledger, wallet: Wallet, source: str, target: str, amount: Any = 1, **kw: Any):
    return wallet.transfer(source, target, amount, book.domain, nonce(book, wallet), **kw)


def withdraw(book: Ledger, wallet: Wallet, account: str, amount: Any = 1, **kw: Any):
    return wallet.withdraw(account, amount, book.domain, nonce(book, wallet), **kw)


def _bad_checksum(address: str) -> str:
    """``address`` in EIP-55 case with the case of its first letter swapped."""
    checksummed = to_checksum_address(address)
    i = next(i for i, c in enumerate(checksummed) if i > 1 and c.isalpha())
    return checksummed[:i] + checksummed[i].swapcase() + checksummed[i + 1 :]


def _malleate_l1(signature_hex: str) -> str:
    """The high-s twin of a 65-byte EIP-712 signature (it recovers the same key)."""
    raw = bytes.fromhex(signature_hex.removeprefix("0x"))
    s = eip712.SECP256K1_N - int.from_bytes(raw[32:64], "big")
    return "0x" + (raw[:32] + s.to_bytes(32, "big") + bytes([55 - raw[64]])).hex()


def _stark_twin(signature: list[str]) -> list[str]:
    r, s = _stark(signature)
    return [f"{r:#x}", f"{EC_ORDER - s:#x}"]


# ------------------------------------------------------------------ 1. interoperability, ledger
def test_an_action_signed_with_plain_starknet_py_is_accepted(shared: Ledger) -> None:
    alice = derive(key_of("alice"))
    message = {
        "from": ALICE,
        "to": CAROL,
        "amount": "2500000",
        "nonce": str(nonce(shared, ALICE_WALLET)),
        "expiry": str(int(time.time()) + 600),
    }
    before = shared.balance(CAROL).units
    receipt = shared.submit_signed(plain_action(alice, "transfer", message))
    assert not receipt.duplicate and receipt.tx.kind == "transfer"
    assert receipt.tx.key == f"{ALICE}/{message['nonce']}"
    assert shared.balance(CAROL).units == before + 2_500_000
    message = {**message, "nonce": str(int(message["nonce"]) + 1)}
    del message["from"], message["to"]
    receipt = shared.submit_signed(plain_action(alice, "withdraw", {"account": ALICE, **message}))
    assert receipt.tx.kind == "withdrawal"


def test_an_onboarding_made_with_plain_libraries_is_accepted(shared: Ledger) -> None:
    frank = derive(key_of("frank"))
    receipt = shared.submit_signed(plain_onboarding(frank))
    assert receipt.tx.kind == "onboarding"
    assert shared.store.wallet(frank.address) == (frank.public_key, f"{frank.account:#x}")
    # Our Wallet for the same key signs actions the ledger accepts for that onboarding.
    shared.deposit(frank.address, "10", key="fund/frank")
    shared.withdraw(frank.address, "4", wallet=make_wallet("frank"), nonce=1)
    assert shared.balance(frank.address).units == 6 * UNIT


# ------------------------------------------------------------------ 4. errors
def _base(book: Ledger) -> dict[str, Any]:
    return transfer(book, ALICE_WALLET, ALICE, BOB)


def _set(envelope: dict[str, Any], *path_and_value: Any) -> dict[str, Any]:
    *path, value = path_and_value
    target = envelope
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return envelope


def _drop(envelope: dict[str, Any], *path: str) -> dict[str, Any]:
    target = envelope
    for part in path[:-1]:
        target = target[part]
    del target[path[-1]]
    return envelope


def _signed_message(book: Ledger, **changes: str) -> dict[str, Any]:
    """An Alice→Bob transfer whose message is ``changes`` applied, validly signed."""
    message = dict(_base(book)["message"]) | changes
    return ALICE_WALLET.sign_action("transfer", message, book.domain)


MALFORMED: dict[str, Callable[[Ledger], Any]] = {
    "another format": lambda b: _set(_base(b), "format", "ledger.action/2"),
    "no signature": lambda b: _drop(_base(b), "signature"),
    "an extra field": lambda b: _set(_base(b), "memo", "hi"),
    "unknown action": lambda b: _set(_base(b), "action", "mint"),
    "message without nonce": lambda b: _drop(_base(b), "message", "nonce"),
    "message with an extra field": lambda b: _set(_base(b), "message", "memo", "x"),
    "domain without revision": lambda b: _drop(_base(b), "domain", "revision"),
    "domain value not a string": lambda b: _set(_base(b), "domain", "revision", 1),
    "signer not an object": lambda b: _set(_base(b), "signer", ALICE),
    "signer account not an address": lambda b: _set(_base(b), "signer", "account", "0x1234"),
    "signer account with a bad checksum": lambda b: _set(
        _base(b), "signer", "account", _bad_checksum(ALICE)
    ),
    "three signature elements": lambda b: _set(
        _base(b), "signature", [*_base(b)["signature"], "0x1"]
    ),
    "signature not a list": lambda b: _set(_base(b), "signature", "0x" + "ab" * 64),
    "amount not a number": lambda b: _set(_base(b), "message", "amount", "ten"),
    "amount above u128": lambda b: _set(_base(b), "message", "amount", str(2**128)),
    "negative amount": lambda b: _set(_base(b), "message", "amount", "-1"),
    "non-ASCII string": lambda b: _set(_base(b), "message", "to", "0xbob\u00e9"),
    "nonce 0, validly signed": lambda b: _signed_message(b, nonce="0"),
    "nonce above 2**63 - 1, validly signed": lambda b: _signed_message(b, nonce=str(2**63)),
    "an order, validly signed": lambda b: ALICE_WALLET.sign_action(
        "order",
        {
            "account": ALICE,
            "market": "ETH-PERP",
            "side": "buy",
            "size": "1",
            "limit_price": "1",
            "nonce": str(nonce(b, ALICE_WALLET)),
            "expiry": str(int(time.time()) + 60),
        },
        b.domain,
    ),
    "an onboarding of another format": lambda b: _set(
        DAVE_WALLET.onboarding(b.domain), "format", "ledger.onboarding/0"
    ),
    # malformed hex
    "signature r not hex": lambda b: _set(_base(b), "signature", 0, "0xzz"),
    "signature s without 0x": lambda b: _set(
        _base(b), "signature", 1, _base(b)["signature"][1][2:]
    ),
    "signature s empty hex": lambda b: _set(_base(b), "signature", 1, "0x"),
    "signature r beyond 256 bits": lambda b: _set(_base(b), "signature", 0, hex(2**256)),
    "stark_public_key not hex": lambda b: _set(_base(b), "signer", "stark_public_key", "0xkey"),
    "stark_account not hex": lambda b: _set(_base(b), "signer", "stark_account", "12"),
    "amount hex not hex": lambda b: _set(_base(b), "message", "amount", "0xzz"),
    "l1_signature not hex": lambda b: _set(
        DAVE_WALLET.onboarding(b.domain), "l1_signature", "0x" + "zz" * 65
    ),
    "l1_signature of odd length": lambda b: _set(
        DAVE_WALLET.onboarding(b.domain),
        "l1_signature",
        DAVE_WALLET.onboarding(b.domain)["l1_signature"][:-1],
    ),
    # wrong length: an EIP-712 signature has 65 bytes
    "l1_signature of 64 bytes": lambda b: _set(
        DAVE_WALLET.onboarding(b.domain),
        "l1_signature",
        DAVE_WALLET.onboarding(b.domain)["l1_signature"][:-2],
    ),
    "l1_signature of 66 bytes": lambda b: _set(
        DAVE_WALLET.onboarding(b.domain),
        "l1_signature",
        DAVE_WALLET.onboarding(b.domain)["l1_signature"] + "1b",
    ),
    "l1_signature with v = 0": lambda b: _set(
        DAVE_WALLET.onboarding(b.domain),
        "l1_signature",
        DAVE_WALLET.onboarding(b.domain)["l1_signature"][:-2] + "00",
    ),
}


# A non-ASCII account id cannot be SNIP-12 encoded, nor is it an account id: either error
# says what is wrong (the request is built before the signature is checked).
ALSO_ACCEPTED: dict[str, Errors] = {"non-ASCII string": InvalidAccount}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_envelope(shared: Ledger, case: str) -> None:
    also = ALSO_ACCEPTED.get(case, ())
    expected = (MalformedEnvelope, *(also if isinstance(also, tuple) else (also,)))
    refuse_envelope(shared, expected, MALFORMED[case](shared))


def test_malformed_operator_signature(shared: Ledger) -> None:
    signed = OPERATOR.sign_system(operations.deposit(ALICE, UNIT, "dep-bad-hex"))
    metadata = json.loads(signed.metadata)
    metadata["auth"]["signature"] = "0xnothex"
    forged = signed._replace(metadata=canonical_json(metadata))
    refuse(shared, MalformedEnvelope, lambda: shared.submit([forged]))


def test_signature_by_another_key(shared: Ledger) -> None:
    envelope = _base(shared)
    struct = envelopes.ACTION_TYPES["transfer"]
    account = ALICE_WALLET.stark_account
    digest = snip12.message_hash(shared.domain, struct, envelope["message"], account)
    # Bob's L2 key over exactly the hash the ledger checks.
    by_bob = copy.deepcopy(envelope)
    by_bob["signature"] = [f"{x:#x}" for x in stark.sign(digest, BOB_WALLET.stark_private_key)]
    refuse_envelope(shared, BadSignature, by_bob)
    # Alice's signature presented under Bob's identity.
    refuse_envelope(
        shared, BadSignature, _set(copy.deepcopy(envelope), "signer", BOB_WALLET.signer_json())
    )
    # A stark_account that is not the account of the stark_public_key.
    other = f"{BOB_WALLET.stark_account:#x}"
    refuse_envelope(
        shared, BadSignature, _set(copy.deepcopy(envelope), "signer", "stark_account", other)
    )
    # Onboarding: the L1 signature by another L1 key; the L2 signature by another L2 key.
    onboarding = DAVE_WALLET.onboarding(shared.domain)
    l1 = eip712.onboarding_message(
        L1_CHAIN_ID, DAVE, DAVE_WALLET.stark_public_key, DAVE_WALLET.stark_account
    )
    wrong_l1 = _set(dict(onboarding), "l1_signature", "0x" + BOB_WALLET.sign_l1(l1).hex())
    refuse_envelope(shared, BadSignature, wrong_l1)
    wrong_l2 = _set(
        dict(onboarding), "l2_signature", BOB_WALLET.onboarding(shared.domain)["l2_signature"]
    )
    refuse_envelope(shared, BadSignature, wrong_l2)


def test_system_event_by_another_key(shared: Ledger) -> None:
    unsigned = operations.deposit(ALICE, UNIT, "dep-not-operator")
    refuse(shared, UnknownOperator, lambda: shared.submit([ALICE_WALLET.sign_system(unsigned)]))
    # The operator's name on Alice's signature.
    by_alice = json.loads(ALICE_WALLET.sign_system(unsigned).metadata)["auth"]["signature"]
    signed = OPERATOR.sign_system(unsigned)
    metadata = json.loads(signed.metadata)
    metadata["auth"]["signature"] = by_alice
    forged = signed._replace(metadata=canonical_json(metadata))
    refuse(shared, BadSignature, lambda: shared.submit([forged]))
    # A signed deposit whose amount was changed afterwards.
    changed = OPERATOR.sign_system(operations.deposit(ALICE, 2 * UNIT, "dep-not-operator"))
    refuse(
        shared, BadSignature, lambda: shared.submit([changed._replace(postings=signed.postings)])
    )


def test_high_s_eip712_signatures_are_refused(shared: Ledger) -> None:
    onboarding = DAVE_WALLET.onboarding(shared.domain)
    twin = _malleate_l1(onboarding["l1_signature"])
    # The twin is a valid signature by the same key for eth-account: only s is "high".
    request = onboarding_request(DAVE, DAVE_WALLET.stark_public_key, DAVE_WALLET.stark_account)
    recovered = Account.recover_message(
        encode_typed_data(full_message=request), signature=bytes.fromhex(twin[2:])
    )
    assert recovered == to_checksum_address(DAVE)
    refuse_envelope(shared, MalleableSignature, _set(onboarding, "l1_signature", twin))
    # The operator's signature of a system event, malleated.
    signed = OPERATOR.sign_system(operations.deposit(ALICE, UNIT, "dep-high-s"))
    metadata = json.loads(signed.metadata)
    metadata["auth"]["signature"] = _malleate_l1(metadata["auth"]["signature"])
    forged = signed._replace(metadata=canonical_json(metadata))
    refuse(shared, MalleableSignature, lambda: shared.submit([forged]))


@pytest.mark.parametrize(
    "domain",
    [
        snip12.Domain("ledger", "1", "SN_MAIN"),
        snip12.Domain("paradex", "1", "SN_SEPOLIA"),
        snip12.Domain("ledger", "2", "SN_SEPOLIA"),
        snip12.Domain("ledger", "1", "SN_SEPOLIA", "0"),
    ],
    ids=["chain", "name", "version", "revision"],
)
def test_wrong_domain(shared: Ledger, domain: snip12.Domain) -> None:
    envelope = ALICE_WALLET.transfer(ALICE, BOB, 1, domain, nonce(shared, ALICE_WALLET))
    refuse_envelope(shared, WrongDomain, envelope)
    refuse_envelope(shared, WrongDomain, DAVE_WALLET.onboarding(domain))


def test_wrong_l1_chain_id(shared: Ledger) -> None:
    mainnet = Wallet(key_of("dave"), l1_chain_id=1)
    refuse_envelope(shared, WrongDomain, mainnet.onboarding(shared.domain))
    # Claiming this ledger's chain id over a signature made for chain 1 breaks the signature.
    forged = _set(mainnet.onboarding(shared.domain), "l1_chain_id", L1_CHAIN_ID)
    refuse_envelope(shared, BadSignature, forged)


def test_expired_action(shared: Ledger) -> None:
    expired = transfer(shared, ALICE_WALLET, ALICE, BOB, expiry=int(time.time()) - 1)
    refuse_envelope(shared, ActionExpired, expired)


def test_expiry_is_checked_against_the_ledger_clock(shared: Ledger) -> None:
    expiry = max(int(time.time()), shared.store.head().recorded_at // 1_000_000) + 30
    clock = shared.clock
    try:
        shared.clock = lambda: expiry * 1_000_000 + 1
        late = transfer(shared, ALICE_WALLET, ALICE, BOB, expiry=expiry)
        refuse_envelope(shared, ActionExpired, late)
        shared.clock = lambda: expiry * 1_000_000
        assert shared.submit_signed(late).tx.kind == "transfer"  # the last valid microsecond
    finally:
        shared.clock = clock


def test_nonce_reused_or_too_old(shared: Ledger) -> None:
    first = nonce(shared, ALICE_WALLET) + 10
    accepted = ALICE_WALLET.transfer(ALICE, BOB, 1, shared.domain, first)
    shared.submit_signed(accepted)
    assert shared.store.last_nonce(ALICE) == first
    refuse_envelope(shared, NonceReused, accepted)  # replay
    same_nonce = ALICE_WALLET.transfer(ALICE, CAROL, 2, shared.domain, first)
    refuse_envelope(shared, NonceReused, same_nonce)  # another action, the same nonce
    older = ALICE_WALLET.transfer(ALICE, BOB, 1, shared.domain, first - 1)
    refuse_envelope(shared, NonceReused, older)  # never used, but below the last one
    # The default nonce (milliseconds since the epoch) is above any test nonce here.
    assert shared.transfer(ALICE, BOB, 1, wallet=ALICE_WALLET).tx.kind == "transfer"


def test_not_onboarded(shared: Ledger) -> None:
    shared.deposit(DAVE, "5", key="fund/dave")
    refuse_envelope(shared, NotOnboarded, DAVE_WALLET.transfer(DAVE, ALICE, 1, shared.domain, 1))
    refuse_envelope(shared, NotOnboarded, DAVE_WALLET.withdraw(DAVE, 1, shared.domain, 1))
    # Dave's (valid) signature presented as Alice's: Alice onboarded another key.
    as_alice = DAVE_WALLET.transfer(ALICE, DAVE, 1, shared.domain, nonce(shared, ALICE_WALLET))
    as_alice["signer"]["account"] = ALICE
    refuse_envelope(shared, NotOnboarded, as_alice)


@pytest.mark.parametrize(
    ("action", "source", "target"),
    [
        ("transfer", BOB, ALICE),
        ("transfer", f"{BOB}:sub", ALICE),
        ("transfer", BOB, f"{BOB}:sub"),
        ("withdraw", BOB, None),
        ("withdraw", f"{BOB}:sub", None),
    ],
)
def test_not_owner(shared: Ledger, action: str, source: str, target: str | None) -> None:
    """Alice may never move Bob's funds, nor his sub-account's."""
    if action == "transfer":
        envelope = transfer(shared, ALICE_WALLET, source, target)
    else:
        envelope = withdraw(shared, ALICE_WALLET, source)
    refuse_envelope(shared, NotOwner, envelope)


def test_owner_moves_own_sub_account(shared: Ledger) -> None:
    margin = f"{ALICE}:margin"
    shared.submit_signed(transfer(shared, ALICE_WALLET, ALICE, margin, 3 * UNIT))
    shared.submit_signed(transfer(shared, ALICE_WALLET, margin, ALICE, UNIT))
    shared.submit_signed(withdraw(shared, ALICE_WALLET, margin, UNIT))
    assert shared.balance(margin).units == UNIT


@pytest.mark.parametrize("amount", ["1.0000001", "0.0000001", "-1", "0", "1e6", "ten", ""])
def test_invalid_amount_when_signing(shared: Ledger, amount: str) -> None:
    before = snapshot(shared)
    with pytest.raises(InvalidAmount):
        ALICE_WALLET.transfer(ALICE, BOB, amount, shared.domain, nonce(shared, ALICE_WALLET))
    with pytest.raises(InvalidAmount):
        ALICE_WALLET.withdraw(ALICE, amount, shared.domain, nonce(shared, ALICE_WALLET))
    with pytest.raises(InvalidAmount):
        shared.transfer(ALICE, BOB, amount, wallet=ALICE_WALLET)
    assert snapshot(shared) == before


def test_signed_zero_amount_is_refused(shared: Ledger) -> None:
    envelope = _signed_message(shared, amount="0")
    refuse_envelope(shared, InvalidAmount, envelope)


# ------------------------------------------------------------------ canonical forms
def test_stark_signature_twins_are_stored_in_one_form(shared: Ledger) -> None:
    """(r, s) and (r, n - s) both verify (Stark ECDSA checks only x): the ledger accepts
    either, stores the low-s form, and the other twin is then a replay."""
    envelope = _base(shared)
    twin = _set(copy.deepcopy(envelope), "signature", _stark_twin(envelope["signature"]))
    receipt = shared.submit_signed(twin)
    stored = json.loads(shared.transaction(receipt.seq).metadata)["auth"]["signature"]
    r, s = (int(x, 16) for x in envelope["signature"])
    assert stored == [f"{r:#x}", f"{min(s, EC_ORDER - s):#x}"]
    refuse_envelope(shared, NonceReused, envelope)


def test_transfer_from_a_system_account_is_not_owner(shared: Ledger) -> None:
    envelope = transfer(shared, ALICE_WALLET, "system:insurance", ALICE)
    refuse_envelope(shared, NotOwner, envelope)


UNHASHABLE = [("transfer", "action"), ("transfer", "from"), ("transfer", "to")]
UNHASHABLE += [("withdraw", "account")]


@pytest.mark.parametrize("value", [[], {}], ids=["list", "object"])
@pytest.mark.parametrize(("action", "field"), UNHASHABLE)
def test_unhashable_value_is_malformed(shared: Ledger, action: str, field: str, value: Any) -> None:
    withdrawal = action == "withdraw"
    envelope = withdraw(shared, ALICE_WALLET, ALICE) if withdrawal else _base(shared)
    if field == "action":
        envelope["action"] = value
    else:
        envelope["message"][field] = value
    refuse_envelope(shared, MalformedEnvelope, envelope)


# ------------------------------------------------------------------ 3. properties
HYPOTHESIS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
MESSAGE_FIELDS = ("from", "to", "amount", "nonce", "expiry")
U128_FIELDS = {"amount", "nonce", "expiry"}
PATHS: list[tuple[Any, ...]] = [
    ("format",),
    ("action",),
    *[("message", name) for name in MESSAGE_FIELDS],
    *[("domain", name) for name in ("name", "version", "chainId", "revision")],
    *[("signer", name) for name in ("account", "stark_public_key", "stark_account")],
    ("signature", 0),
    ("signature", 1),
]
DELETE = object()


def _get(envelope: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        envelope = envelope[part]
    return envelope


def _meaning(path: tuple[Any, ...], value: Any) -> tuple[str, Any]:
    """What the ledger reads from ``value`` at ``path``: two spellings with the same
    meaning (hex case, leading zeros, 0x vs decimal, EIP-55 case) verify alike."""
    if path[0] == "message" and path[1] in U128_FIELDS:
        try:
            return "u128", snip12.encode_u128(value)
        except ValueError:
            pass
    elif path == ("signer", "account"):
        try:
            return "address", normalize_address(value)
        except (LedgerError, TypeError):
            pass
    elif path[0] in {"signer", "signature"} and isinstance(value, str) and value.startswith("0x"):
        try:
            return "hex", int(value, 16)
        except ValueError:
            pass
    return "json", json.dumps(value, sort_keys=True)


def _envelope_meaning(envelope: Any) -> Any:
    try:
        shape = (
            sorted(envelope),
            sorted(envelope["message"]),
            sorted(envelope["domain"]),
            sorted(envelope["signer"]),
            len(envelope["signature"]),
        )
        return shape, tuple(_meaning(path, _get(envelope, path)) for path in PATHS)
    except (KeyError, TypeError, IndexError):
        return "unusual", json.dumps(envelope, sort_keys=True)


def _edits(original: str) -> st.SearchStrategy[str]:
    """One-character edits of ``original``: replace, delete, insert, change case."""
    if not original:
        return st.text(min_size=1, max_size=3)
    index = st.integers(0, len(original) - 1)
    return st.one_of(
        st.tuples(index, st.characters()).map(
            lambda p: original[: p[0]] + p[1] + original[p[0] + 1 :]
        ),
        index.map(lambda i: original[:i] + original[i + 1 :]),
        st.tuples(index, st.characters()).map(lambda p: original[: p[0]] + p[1] + original[p[0] :]),
        index.map(lambda i: original[:i] + original[i].swapcase() + original[i + 1 :]),
    )


def _near(original: str) -> st.SearchStrategy[str]:
    """Numbers close to ``original`` (decimal or hex), written the same way."""
    try:
        base, value = (16, int(original, 16)) if original.startswith("0x") else (10, int(original))
    except ValueError:
        return st.nothing()
    deltas = st.integers(-(2**70), 2**70).filter(bool)
    return deltas.map(lambda d: hex(value + d) if base == 16 else str(value + d))


def _mutations(path: tuple[Any, ...], original: Any) -> st.SearchStrategy[Any]:
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False))
    containers = st.one_of(
        st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers())
    )
    others = st.one_of(scalars, containers)
    numbers = st.integers(-(2**260), 2**260).flatmap(lambda n: st.sampled_from([str(n), hex(n)]))
    return st.one_of(
        _edits(original), _near(original), numbers, st.text(max_size=70), others, st.just(DELETE)
    )


def test_mutated_envelope_is_refused(shared: Ledger) -> None:
    """Changing the meaning of any field, or deleting it, fails verification and writes
    nothing; the unchanged envelope is then accepted (so the mutation was the cause)."""
    base = _base(shared)
    before = snapshot(shared)
    seen: set[str] = set()

    @HYPOTHESIS
    @given(path=st.sampled_from(PATHS), data=st.data())
    def mutate(path: tuple[Any, ...], data: st.DataObject) -> None:
        original = _get(base, path)
        value = data.draw(_mutations(path, original), label="value")
        assume(value is DELETE or _meaning(path, value) != _meaning(path, original))
        mutated = copy.deepcopy(base)
        if value is DELETE:
            del _get(mutated, path[:-1])[path[-1]]
        else:
            _get(mutated, path[:-1])[path[-1]] = value
        with pytest.raises(LedgerError) as caught:
            shared.submit_signed(mutated)
        seen.add(type(caught.value).__name__)
        assert snapshot(shared) == before

    mutate()
    assert {"MalformedEnvelope", "BadSignature", "WrongDomain"} <= seen, seen
    assert shared.submit_signed(base).tx.key == f"{ALICE}/{base['message']['nonce']}"


def test_flipped_byte_is_refused(shared: Ledger) -> None:
    """Flipping any bits of any byte of the serialised envelope either breaks the JSON or
    fails verification, and writes nothing."""
    base = _base(shared)
    raw = json.dumps(base, separators=(",", ":")).encode()
    before = snapshot(shared)
    outcomes: set[str] = set()

    @HYPOTHESIS
    @given(index=st.integers(0, len(raw) - 1), mask=st.integers(1, 255))
    def flip(index: int, mask: int) -> None:
        flipped = raw[:index] + bytes([raw[index] ^ mask]) + raw[index + 1 :]
        try:
            envelope = json.loads(flipped.decode("utf-8"))
        except ValueError:  # UnicodeDecodeError and JSONDecodeError
            outcomes.add("unparsable")
            return
        assume(_envelope_meaning(envelope) != _envelope_meaning(base))
        with pytest.raises(LedgerError) as caught:
            shared.submit_signed(envelope)
        outcomes.add(type(caught.value).__name__)
        assert snapshot(shared) == before

    flip()
    assert {"unparsable", "BadSignature"} <= outcomes, outcomes
    assert shared.submit_signed(base).tx.kind == "transfer"


OWNERS = [ALICE_WALLET, BOB_WALLET, CAROL_WALLET]


def test_replayed_actions_are_refused(shared: Ledger) -> None:
    """Every accepted action, replayed as is, re-serialised, re-spelled (same values) or
    with its Stark signature's twin, is refused with NonceReused and writes nothing; a
    batch holding one action twice is refused whole."""
    accepted: list[dict[str, Any]] = []

    @settings(HYPOTHESIS, max_examples=12)
    @given(
        actions=st.lists(
            st.tuples(
                st.sampled_from(["transfer", "withdraw"]),
                st.sampled_from(OWNERS),
                st.sampled_from(OWNERS),
                st.integers(1, UNIT),
            ),
            min_size=1,
            max_size=3,
        ),
        data=st.data(),
    )
    def replay(actions: list[tuple[str, Wallet, Wallet, int]], data: st.DataObject) -> None:
        for kind, owner, other, amount in actions:
            if kind == "transfer":
                target = other.address if other is not owner else f"{owner.address}:sub"
                envelope = transfer(shared, owner, owner.address, target, amount)
            else:
                envelope = withdraw(shared, owner, owner.address, amount)
            receipt = shared.submit_signed(envelope)
            assert receipt.tx.key == f"{owner.address}/{envelope['message']['nonce']}"
            accepted.append(envelope)
        # The choice's bounds must not depend on the (growing) history: index modulo.
        old = accepted[data.draw(st.integers(0, 2**16), label="replayed") % len(accepted)]
        respelled = copy.deepcopy(old)
        respelled["message"]["amount"] = hex(int(old["message"]["amount"]))
        respelled["signer"]["stark_public_key"] = (
            "0x" + old["signer"]["stark_public_key"][2:].upper()
        )
        twin = _set(copy.deepcopy(old), "signature", _stark_twin(old["signature"]))
        for variant in (old, json.loads(json.dumps(old)), respelled):
            refuse_envelope(shared, NonceReused, variant)
        # NonceReused today (see test_stark_signature_twin_is_refused); refused either way.
        refuse_envelope(shared, (NonceReused, MalleableSignature, BadSignature), twin)
        owner = data.draw(st.sampled_from(OWNERS), label="batch owner")
        fresh = withdraw(shared, owner, owner.address, 1)
        twice = [shared.request_for(fresh), shared.request_for(fresh)]
        refuse(shared, NonceReused, lambda: shared.submit(twice))
        shared.submit_signed(fresh)
        accepted.append(fresh)

    replay()
    assert len(accepted) >= 12


def test_the_shared_ledger_audits_clean(shared: Ledger) -> None:
    """Runs last: every signature written by the tests above re-verifies."""
    report = shared.audit()
    assert report.ok, report.divergence
    assert report.transactions == shared.store.head().seq


# ------------------------------------------------------------------ 5. end to end
SQLITE_TRIGGERS = ("transactions_no_update", "blocks_no_update")


@contextmanager
def attacker(url: str) -> Iterator[Connection]:
    """A connection with the append-only guards off (back on when it commits)."""
    engine = make_engine(url)
    try:
        with engine.begin() as db:
            if url.startswith("postgres"):
                db.exec_driver_sql("SET LOCAL session_replication_role = replica")
                yield db
            else:
                saved = []
                for name in SQLITE_TRIGGERS:
                    query = text(
                        "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = :n"
                    )
                    saved.append(db.execute(query, {"n": name}).scalar_one())
                    db.exec_driver_sql(f"DROP TRIGGER {name}")
                yield db
                for statement in saved:
                    db.exec_driver_sql(statement)
    finally:
        engine.dispose()


def _rewrite(url: str, rows: list[tuple[int, str, bytes, bytes]], head: bytes) -> None:
    with attacker(url) as db:
        for seq, metadata, prev_hash, tx_hash in rows:
            db.execute(
                text(
                    "UPDATE transactions SET metadata = :m, prev_hash = :p, hash = :h "
                    "WHERE seq = :s"
                ),
                {"m": metadata, "p": prev_hash, "h": tx_hash, "s": seq},
            )
        db.execute(text("UPDATE chain_head SET hash = :h WHERE id = 1"), {"h": head})


def test_end_to_end(db_url: str) -> None:
    dave, erin = make_wallet("dave"), make_wallet("erin")
    with Ledger.init(db_url, operator=OPERATOR) as book:
        assert [book.onboard(w).tx.seq for w in (dave, erin)] == [3, 4]
        assert book.store.wallet(dave.address) == (
            dave.stark_public_key,
            f"{dave.stark_account:#x}",
        )
        book.deposit(dave.address, "100", key="dep-dave")
        moved = book.transfer(dave.address, erin.address, "30", wallet=dave, nonce=1)
        book.withdraw(erin.address, "10", wallet=erin, nonce=1)
        # Erin forges withdrawals of Dave's funds: in her name, in his name, with his identity.
        refuse(book, NotOwner, lambda: book.withdraw(dave.address, "1", wallet=erin, nonce=2))
        as_dave = erin.withdraw(dave.address, "1", book.domain, nonce=2)
        as_dave["signer"]["account"] = dave.address
        refuse_envelope(book, NotOnboarded, as_dave)
        with_his_keys = _set(
            erin.withdraw(dave.address, "1", book.domain, 2), "signer", dave.signer_json()
        )
        refuse_envelope(book, BadSignature, with_his_keys)
        # The operator cannot sign a withdrawal either: it is not a system event.
        forged = OPERATOR.sign_system(operations.withdrawal(dave.address, UNIT, "w-op"))
        refuse(book, MalformedEnvelope, lambda: book.submit([forged]))
        accounts = (dave.address, erin.address, BRIDGE, WITHDRAWALS)
        balances = {a: book.balance(a).units for a in accounts}
        # 100 deposited; 10 withdrawn waits in system:withdrawals for its L1 payout.
        assert balances == {
            dave.address: 70 * UNIT,
            erin.address: 20 * UNIT,
            BRIDGE: -100 * UNIT,
            WITHDRAWALS: 10 * UNIT,
        }
        header = book.seal()
        [(_, _, block_signature)] = list(book.store.iter_blocks())
        seal = eip712_message(
            "SystemEvent",
            [
                {"name": "kind", "type": "string"},
                {"name": "key", "type": "string"},
                {"name": "digest", "type": "bytes32"},
            ],
            {"kind": "seal", "key": f"block-{header.number}", "digest": header.hash},
        )
        sealer = Account.recover_message(
            encode_typed_data(full_message=seal), signature=block_signature
        )
        assert sealer == to_checksum_address(OPERATOR.address)
        report = book.audit()
        assert report.ok, report.divergence
        assert (report.transactions, report.blocks) == (7, 1)
        records = list(book.store.iter_transactions())
        head = book.store.head()

    # Corrupt the transfer's stored signature and re-chain every later hash, as an attacker
    # with database access would: only the signature check can tell.
    seq = moved.tx.seq
    metadata = json.loads(records[seq - 1].metadata)
    r, s = _stark(metadata["auth"]["signature"])
    metadata["auth"]["signature"] = [f"{r:#x}", f"{(s + 1) % EC_ORDER:#x}"]
    forged_rows, prev = [], records[seq - 2].hash
    for tx in records[seq - 1 :]:
        changed = tx._replace(prev_hash=prev)
        if tx.seq == seq:
            changed = changed._replace(metadata=canonical_json(metadata))
        prev = chain_hash(prev, changed.encode())
        forged_rows.append((tx.seq, changed.metadata, changed.prev_hash, prev))
    _rewrite(db_url, forged_rows, prev)
    with Ledger(db_url) as book:
        report = book.audit()
    assert not report.ok and report.divergence is not None
    assert report.divergence.seq == seq, report.divergence
    [problem] = report.divergence.problems
    assert problem.startswith("signature check fails: "), problem

    # Restored, the ledger audits clean again; then a block signed by a non-operator key.
    _rewrite(
        db_url, [(t.seq, t.metadata, t.prev_hash, t.hash) for t in records[seq - 1 :]], head.hash
    )
    with Ledger(db_url) as book:
        assert book.audit().ok
    with attacker(db_url) as db:
        db.execute(
            text("UPDATE blocks SET signature = :s WHERE number = 1"),
            {"s": dave.sign_block(header)},
        )
    with Ledger(db_url) as book:
        report = book.audit()
    assert report.divergence is not None and report.divergence.block == 1, report.divergence
    assert report.divergence.problems == (
        f"block sealed by {dave.address}, not a registered operator",
    )
