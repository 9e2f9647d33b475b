"""The set of operator keys lives in the journal: genesis registers the first, signed by
itself; later keys are added by a current operator."""

from __future__ import annotations

import pytest

from ledger import Ledger
from ledger.core import genesis
from ledger.core.encoding import sha256
from ledger.errors import (
    AlreadyOnboarded,
    AuthorizationError,
    BadSignature,
    NotReversible,
    UnknownOperator,
)
from ledger.wallet import Wallet
from tests.conftest import ALICE, ALICE_WALLET, OPERATOR, test_wallet

ALICE_KEY = sha256(b"ledger-test-wallet-alice").digest()  # as tests.conftest derives it


def test_genesis_records_the_operator_and_the_chain_ids(book: Ledger) -> None:
    first = book.transaction(1)
    assert first.kind == "operator_keys"
    assert book.store.auth_projection().operators == {OPERATOR.address}
    assert book.store.settings() == {
        "l1_chain_id": str(genesis.DEFAULT_L1_CHAIN_ID),
        "l2_chain_id": genesis.DEFAULT_L2_CHAIN_ID,
    }


def test_a_second_operator_is_added_by_the_first(book: Ledger) -> None:
    second = test_wallet("second-operator")
    book.add_operator(second.address)
    with Ledger(book.store.engine.url.render_as_string(False), operator=second) as other:
        other.deposit(ALICE, "1")
    assert book.balance(ALICE).units == 1_000_000
    assert book.audit().ok


def test_an_unregistered_key_cannot_sign_system_events(book: Ledger) -> None:
    stranger = test_wallet("stranger")
    head = book.store.head()
    with Ledger(book.store.engine.url.render_as_string(False), operator=stranger) as other:
        with pytest.raises(UnknownOperator, match="not a registered operator"):
            other.deposit(ALICE, "1")
        with pytest.raises(UnknownOperator):
            other.add_operator(stranger.address)
    assert book.store.head() == head


def test_an_owner_onboards_once(book: Ledger) -> None:
    """The same onboarding again is an idempotent duplicate; another L2 key is refused."""
    again = book.onboard(ALICE_WALLET)
    assert again.duplicate
    other_chain = Wallet(ALICE_KEY, l1_chain_id=1)  # same L1 key, another derived L2 key
    assert (
        other_chain.address == ALICE
        and other_chain.stark_public_key != ALICE_WALLET.stark_public_key
    )
    head = book.store.head()
    envelope = other_chain.onboarding(book.domain)
    envelope["l1_chain_id"] = book.l1_chain_id  # claim this ledger's chain ...
    with pytest.raises(BadSignature):  # ... but the L1 signature was made for chain 1
        book.submit_signed(envelope)
    forged = Wallet(ALICE_KEY, l1_chain_id=book.l1_chain_id)
    forged.__dict__["stark_private_key"] = 0xC0FFEE  # an L2 key that is not the derived one
    with pytest.raises(AlreadyOnboarded, match="already onboarded"):
        book.onboard(forged)
    assert book.store.head() == head


def test_registrations_and_onboardings_cannot_be_reversed(book: Ledger) -> None:
    head = book.store.head()
    for seq in (1, 2):  # genesis, then ALICE's onboarding
        with pytest.raises(NotReversible, match="moved no funds"):
            book.reverse(seq, reason="x")
    assert book.store.head() == head


def test_operator_keys_cannot_squat_an_owners_action_keys(book: Ledger) -> None:
    head = book.store.head()
    for key in (f"{ALICE}/7", f"onboard/{test_wallet('dave').address}"):
        with pytest.raises(AuthorizationError, match="reserved for an owner's signed actions"):
            book.deposit(ALICE, 100, key=key)
    assert book.store.head() == head
    book.deposit(ALICE, 100, key="d-1")
    book.transfer(ALICE, ALICE + ":iso", 10, wallet=ALICE_WALLET, nonce=7)
    assert book.store.last_nonce(ALICE) == 7
