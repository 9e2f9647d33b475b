"""Request builders for the money movements a user or operator asks for."""

from __future__ import annotations

from collections.abc import Mapping

from ledger.core.accounts import BRIDGE, WITHDRAWALS, is_system
from ledger.core.amounts import USDC, Asset, check_amount
from ledger.core.journal import (
    Posting,
    TxKind,
    TxRecord,
    TxRequest,
    canonical_account,
    make_request,
)
from ledger.errors import (
    AlreadyReversed,
    InvalidAccount,
    NotFound,
    NotReversible,
    SameAccount,
    UnbalancedTransaction,
)


def _user_account(account: str, role: str) -> str:
    canonical = canonical_account(account)
    if is_system(canonical):
        raise InvalidAccount(f"{role} must be a user account, got system account {canonical}")
    return canonical


def deposit(
    account: str,
    amount: int,
    key: str,
    metadata: Mapping[str, object] | None = None,
    asset: Asset = USDC,
) -> TxRequest:
    """Credit ``account`` with ``asset`` arriving from outside (``system:bridge``): USDC,
    or the base asset of a listed spot pair."""
    target = _user_account(account, "deposit account")
    units = check_amount(amount, asset)
    return make_request(
        TxKind.DEPOSIT.value,
        key,
        (Posting(BRIDGE, asset.code, -units), Posting(target, asset.code, units)),
        metadata,
    )


def withdrawal(
    account: str, amount: int, key: str, metadata: Mapping[str, object] | None = None
) -> TxRequest:
    """Debit ``account`` with USDC leaving the venue: it waits in ``system:withdrawals``
    until the vault pays it out on L1 (:func:`payout`)."""
    source = _user_account(account, "withdrawal account")
    units = check_amount(amount, USDC)
    return make_request(
        TxKind.WITHDRAWAL.value,
        key,
        (Posting(source, USDC.code, -units), Posting(WITHDRAWALS, USDC.code, units)),
        metadata,
    )


def payout(seq: int, amount: int, metadata: Mapping[str, object] | None = None) -> TxRequest:
    """The second phase of withdrawal ``seq``: the vault paid ``amount`` out on L1, so it
    leaves ``system:withdrawals`` for the bridge. Keyed by the withdrawal: paid once."""
    units = check_amount(amount, USDC)
    return make_request(
        TxKind.PAYOUT.value,
        f"payout/{seq}",
        (Posting(WITHDRAWALS, USDC.code, -units), Posting(BRIDGE, USDC.code, units)),
        {**(metadata or {}), "withdrawal": seq},
    )


def transfer(
    source: str,
    target: str,
    amount: int,
    key: str,
    metadata: Mapping[str, object] | None = None,
) -> TxRequest:
    """Move USDC between two accounts (also into and out of sub-accounts)."""
    src, dst = canonical_account(source), canonical_account(target)
    if src == dst:
        raise SameAccount(f"cannot transfer from {src} to itself")
    units = check_amount(amount, USDC)
    return make_request(
        TxKind.TRANSFER.value,
        key,
        (Posting(src, USDC.code, -units), Posting(dst, USDC.code, units)),
        metadata,
    )


def opposite(original: TxRecord) -> tuple[Posting, ...]:
    """The postings that undo ``original`` exactly."""
    return tuple(Posting(p.account, p.asset, -p.amount) for p in original.postings)


def reversal(original: TxRecord, key: str, reason: str) -> TxRequest:
    """A correction: the exact opposite of ``original``, referencing it."""
    return make_request(
        TxKind.REVERSAL.value,
        key,
        opposite(original),
        {"reason": reason},
        reverses=original.seq,
    )


# Corrections undo money movements the operator or a user asked for; withdrawals leave the
# ledger for L1, and trading transactions carry state (positions, costs) a reversal of their
# postings would not restore.
REVERSIBLE_KINDS = frozenset({TxKind.DEPOSIT.value, TxKind.TRANSFER.value})


def check_reversal(request: TxRequest, original: TxRecord | None, reversed_by: str | None) -> None:
    """Refuse a reversal of a missing transaction, of a reversal, of something already
    reversed (``reversed_by`` says by what), or one that is not the exact opposite."""
    seq = request.reverses
    if original is None:
        raise NotFound(f"no transaction with sequence {seq} to reverse")
    if original.kind == TxKind.REVERSAL.value:
        raise AlreadyReversed(
            f"transaction {seq} is itself a reversal; correct it with a new transaction"
        )
    if reversed_by is not None:
        raise AlreadyReversed(f"transaction {seq} was already reversed by {reversed_by}")
    if not original.postings:
        raise NotReversible(
            f"transaction {seq} ({original.kind}) moved no funds: there is nothing to reverse"
        )
    if original.kind == TxKind.WITHDRAWAL.value:
        raise NotReversible(
            f"withdrawal {seq} may already be paid out on L1 (its claim is in a block): it "
            "cannot be reversed; credit the account with a deposit if it was never paid"
        )
    if original.kind not in REVERSIBLE_KINDS:
        raise NotReversible(
            f"transaction {seq} is a {original.kind}: the ledger computed it from the trading "
            "state, so only a new trade, settlement or liquidation changes its effect"
        )
    if request.kind != TxKind.REVERSAL.value or request.postings != opposite(original):
        raise UnbalancedTransaction(
            f"a reversal of {seq} must post exactly the opposite of its postings"
        )
