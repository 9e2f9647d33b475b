"""The set of operator keys lives in the journal: genesis registers the first, signed by
itself; later keys are added by a current operator."""

from __future__ import annotations

import pytest

from ledger import Ledger
from ledger.core import genesis
from ledger.errors import UnknownOperator
from tests.conftest import ALICE, OPERATOR, test_wallet


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
