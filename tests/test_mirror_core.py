"""The mirror's pure core and its place in the journal: signed authorisations (forged ones
refused), entries netted per block and split within the journal's limits, mirrored value
kept apart from everything spendable, and the state folded back from the journal."""

from __future__ import annotations

import json

import pytest

from ledger import Ledger
from ledger.core import mirror, operations
from ledger.core.accounts import STARKNET, mirror_account, normalize_account
from ledger.core.amounts import MIRROR_ASSET, USDC
from ledger.core.encoding import canonical_json
from ledger.core.journal import MAX_POSTINGS_PER_TX, Posting, TxKind, make_request
from ledger.core.mirror import TRANSFER_SELECTOR, Transfer
from ledger.errors import (
    BadSignature,
    InvalidAccount,
    MalformedEnvelope,
    MirrorError,
    NotOwner,
    NotReversible,
    UnbalancedTransaction,
)
from tests.conftest import ALICE, ALICE_WALLET, BOB, BOB_WALLET, CAROL, CAROL_WALLET

TOKEN = 0x053C91253BC9682C04929CA02ED00B3E423F6710D2EE7E0D5EBB06F3ECF368A8
CHAIN = "starknet:SN_SEPOLIA"


def _state(book: Ledger) -> mirror.MirrorState:
    kinds = (TxKind.ACCOUNT_SETTING.value, TxKind.MIRROR.value)
    return mirror.fold(book.store.transactions_of_kind(kinds))


def test_an_owner_authorises_and_revokes_its_own_l2_account(book: Ledger) -> None:
    book.submit_signed(ALICE_WALLET.mirror(hex(TOKEN), book.domain, nonce=1))
    book.submit_signed(BOB_WALLET.mirror(TOKEN, book.domain, nonce=1))
    state = _state(book)
    alice = state.authorizations[ALICE]
    assert (alice.l2_address, alice.token, alice.account) == (
        ALICE_WALLET.stark_account,
        TOKEN,
        f"mirror:{ALICE}",
    )
    book.submit_signed(BOB_WALLET.mirror(TOKEN, book.domain, revoke=True, nonce=2))
    assert set(_state(book).authorizations) == {ALICE}
    assert book.audit().ok


def test_forged_or_foreign_authorisations_are_refused(book: Ledger) -> None:
    head = book.store.head().seq
    envelope = ALICE_WALLET.mirror(TOKEN, book.domain, nonce=1)
    tampered = json.loads(json.dumps(envelope))
    tampered["message"]["token"] = hex(TOKEN + 1)  # signed for another token
    with pytest.raises(BadSignature):
        book.submit_signed(tampered)
    bob_signs_for_alice = json.loads(json.dumps(envelope))
    bob_signs_for_alice["signer"] = BOB_WALLET.signer_json()
    with pytest.raises((BadSignature, MalformedEnvelope)):
        book.submit_signed(bob_signs_for_alice)
    # Properly signed, but naming someone else's L2 account, or a sub-account.
    message = dict(envelope["message"])
    foreign = ALICE_WALLET.sign_action(
        "mirror_authorize", message | {"l2_address": hex(BOB_WALLET.stark_account)}, book.domain
    )
    with pytest.raises(NotOwner, match="its own L2 account"):
        book.submit_signed(foreign)
    sub = ALICE_WALLET.sign_action(
        "mirror_authorize", message | {"account": f"{ALICE}:savings"}, book.domain
    )
    with pytest.raises(MalformedEnvelope, match="main account"):
        book.submit_signed(sub)
    assert book.store.head().seq == head
    assert _state(book).authorizations == {}


def test_mirrored_value_is_evidence_only(book: Ledger) -> None:
    book.submit_signed(ALICE_WALLET.mirror(TOKEN, book.domain, nonce=1))
    auth = _state(book).authorizations[ALICE]
    book.submit([book.operator_signed(mirror.opening(CHAIN, auth, 7, 0xAB, 5_000_000))])
    assert book.balance(mirror_account(ALICE), MIRROR_ASSET.code).units == 5_000_000
    assert book.balance(STARKNET, MIRROR_ASSET.code).units == -5_000_000
    book.deposit(ALICE, "10")
    head = book.store.head().seq
    refused = [
        # a user moving USDC into, or mirrored value out of, a mirror account
        lambda: book.transfer(ALICE, mirror_account(ALICE), "1", wallet=ALICE_WALLET, nonce=5),
        lambda: book.withdraw(mirror_account(ALICE), "1", wallet=ALICE_WALLET, nonce=6),
        # the operator crediting L2USDC as a deposit
        lambda: book.deposit(ALICE, "1", asset=MIRROR_ASSET.code),
        # a mirror entry posting USDC
        lambda: book.submit(
            [
                book.operator_signed(
                    make_request(
                        TxKind.MIRROR.value,
                        "l2/forged",
                        (Posting(STARKNET, USDC.code, -1), Posting(ALICE, USDC.code, 1)),
                        {},
                    )
                )
            ]
        ),
    ]
    for attempt in refused:
        with pytest.raises((UnbalancedTransaction, InvalidAccount, BadSignature, NotOwner)):
            attempt()
    assert book.store.head().seq == head
    assert book.audit().ok


def test_mirror_accounts_are_named_by_owner() -> None:
    assert normalize_account(f"mirror:{ALICE.upper().replace('0X', '0x')}") == f"mirror:{ALICE}"
    with pytest.raises(InvalidAccount):
        normalize_account("mirror:alice")


def _transfer(block: int, index: int, sender: int, recipient: int, amount: int) -> Transfer:
    return Transfer(block, 0xB10C + block, 0x7 + index, index, sender, recipient, amount)


def test_block_entries_net_per_account_and_split_within_limits() -> None:
    alice, bob, stranger = 0xA, 0xB, 0xC
    accounts = {alice: mirror_account(ALICE), bob: mirror_account(BOB)}
    transfers = [
        _transfer(5, 0, 0, alice, 100),  # mint to alice
        _transfer(5, 1, alice, bob, 30),  # between two mirrored accounts
        _transfer(5, 2, stranger, 0xD, 999),  # touches nobody mirrored: ignored
        _transfer(5, 3, bob, stranger, 10),
    ]
    [entry] = mirror.block_entries(CHAIN, TOKEN, 5, 0xB10C + 5, transfers, accounts)
    assert entry.key == f"l2/0/5/{0xB10C + 5:#x}/0"
    assert sorted(entry.postings) == sorted(
        [
            Posting(mirror_account(ALICE), MIRROR_ASSET.code, 70),
            Posting(mirror_account(BOB), MIRROR_ASSET.code, 20),
            Posting(STARKNET, MIRROR_ASSET.code, -90),
        ]
    )
    meta = json.loads(entry.metadata)
    assert (meta["block"], meta["block_hash"], len(meta["events"])) == (5, hex(0xB10C + 5), 3)
    # Many events in one block: parts within the posting and metadata limits, same keys
    # every time the block is read.
    many = {0x1000 + i: f"mirror:0x{i:040x}" for i in range(100)}
    burst = [_transfer(9, i, 0, 0x1000 + i, 1 + i) for i in range(100)]
    parts = mirror.block_entries(CHAIN, TOKEN, 9, 0x99, burst, many)
    assert len(parts) == 4 and all(len(p.postings) <= MAX_POSTINGS_PER_TX for p in parts)
    assert [p.key for p in parts] == [
        p.key for p in mirror.block_entries(CHAIN, TOKEN, 9, 0x99, burst, many)
    ]
    assert sum(p.amount for part in parts for p in part.postings if p.account != STARKNET) == sum(
        range(1, 101)
    )


def test_transfer_events_in_both_erc20_layouts() -> None:
    assert mirror.parse_transfer([TRANSFER_SELECTOR, 1, 2], [5, 0]) == (1, 2, 5)
    assert mirror.parse_transfer([TRANSFER_SELECTOR], [1, 2, 5, 0]) == (1, 2, 5)
    assert mirror.parse_transfer([0x1234, 1, 2], [5, 0]) is None  # Approval etc.
    with pytest.raises(MirrorError, match="neither"):
        mirror.parse_transfer([TRANSFER_SELECTOR, 1], [5, 0])
    huge = mirror.parse_transfer([TRANSFER_SELECTOR, 1, 2], [5, 1])  # high word set
    assert huge == (1, 2, 2**128 + 5)  # not refused unless it touches a mirrored account
    with pytest.raises(MirrorError, match="beyond any USDC amount"):
        mirror.block_entries(CHAIN, TOKEN, 3, 0x3, [_transfer(3, 0, 1, 2, 2**128 + 5)], {2: "x"})
    assert mirror.block_entries(CHAIN, TOKEN, 3, 0x3, [_transfer(3, 0, 1, 2, 2**128)], {}) == []
    with pytest.raises(MirrorError, match="two 128-bit felts"):
        mirror.parse_u256([5], "balance_of")


def test_fold_follows_opens_closes_and_rollbacks(book: Ledger) -> None:
    book.submit_signed(ALICE_WALLET.mirror(TOKEN, book.domain, nonce=1))
    auth = _state(book).authorizations[ALICE]
    account = auth.account
    opened = book.submit([book.operator_signed(mirror.opening(CHAIN, auth, 10, 0x10, 50))])[0]
    events = mirror.block_entries(
        CHAIN,
        TOKEN,
        12,
        0x12,
        [_transfer(12, 0, 0, auth.l2_address, 5)],
        {auth.l2_address: account},
    )
    [entry] = book.submit([book.operator_signed(r) for r in events])
    state = _state(book)
    assert state.opened[account].block == 10 and state.last_block == (12, 0x12)
    assert set(state.entries) == {opened.seq, entry.seq}
    # Block 12 is orphaned: rolling it back restores the balance and forgets the block.
    record = book.store.transaction(entry.seq)
    book.submit([book.operator_signed(mirror.rollback(CHAIN, record, 10, 0x10))])
    state = _state(book)
    assert state.last_block == (10, 0x10) and set(state.entries) == {opened.seq}
    assert book.balance(account, MIRROR_ASSET.code).units == 50
    closing = mirror.closing(CHAIN, account, state.opened[account], TOKEN, 11, 0x11, 50, "revoked")
    book.submit([book.operator_signed(closing)])
    assert _state(book).opened == {} and book.balance(account, MIRROR_ASSET.code).units == 0
    # Mirror entries are corrected by rollbacks, never by an operator reversal.
    with pytest.raises(NotReversible):
        book.submit([book.operator_signed(operations.reversal(record, "r/1", "no"))])
    assert book.audit().ok


def test_an_entry_must_post_what_its_l2_reads_imply(book: Ledger) -> None:
    book.submit_signed(ALICE_WALLET.mirror(TOKEN, book.domain, nonce=1))
    auth = _state(book).authorizations[ALICE]
    honest = mirror.opening(CHAIN, auth, 7, 0xAB, 5_000_000)
    inflated = honest._replace(
        postings=(
            Posting(STARKNET, MIRROR_ASSET.code, -6_000_000),
            Posting(mirror_account(ALICE), MIRROR_ASSET.code, 6_000_000),
        )
    )
    with pytest.raises(UnbalancedTransaction, match="L2 reads it records imply"):
        book.submit([book.operator_signed(inflated)])
    [entry] = mirror.block_entries(
        CHAIN,
        TOKEN,
        8,
        0x8,
        [_transfer(8, 0, 0, auth.l2_address, 5)],
        {auth.l2_address: auth.account},
    )
    meta = json.loads(entry.metadata)
    meta["events"][0]["amount"] = "6"  # the recorded read no longer matches the postings
    with pytest.raises(UnbalancedTransaction, match="imply"):
        book.submit([book.operator_signed(entry._replace(metadata=canonical_json(meta)))])
    book.submit([book.operator_signed(honest)])
    assert book.audit().ok


def test_audit_checks_where_mirrored_value_came_from(book: Ledger) -> None:
    """Entries only a dishonest operator could write, each caught on replay: an open
    without the owner's authorisation, a rollback that is not the opposite of its entry,
    and a rollback of something that is no mirror entry."""
    unauthorised = mirror.Authorization(CAROL, CAROL_WALLET.stark_account, TOKEN, 3)
    book.submit([book.operator_signed(mirror.opening(CHAIN, unauthorised, 1, 0x1, 7_000))])
    report = book.audit()
    assert report.divergence is not None
    assert "without its standing authorisation" in report.divergence.describe()


def test_audit_checks_rollbacks(book: Ledger) -> None:
    book.submit_signed(ALICE_WALLET.mirror(TOKEN, book.domain, nonce=1))
    auth = _state(book).authorizations[ALICE]
    [opened] = book.submit([book.operator_signed(mirror.opening(CHAIN, auth, 1, 0x1, 100))])
    honest = mirror.rollback(CHAIN, book.store.transaction(opened.seq), 0, 0x0)
    inflated = honest._replace(
        postings=(
            Posting(STARKNET, MIRROR_ASSET.code, -5_000),
            Posting(mirror_account(ALICE), MIRROR_ASSET.code, 5_000),
        )
    )
    book.submit([book.operator_signed(inflated)])
    report = book.audit()
    assert report.divergence is not None
    assert "not the exact opposite" in report.divergence.describe()
