"""Replay from genesis: recompute everything a store claims and name the first divergence.

:class:`Replayer` is fed stored transactions in sequence order and stored block
headers; it recomputes every balance, balance-after, account version, hash and state
root from the postings alone and reports what differs from the stored values.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from ledger.core import eip712, envelopes, genesis
from ledger.core.accounts import BRIDGE, CLEARING, WITHDRAWALS, is_system
from ledger.core.amounts import USDC
from ledger.core.authorization import Auth, AuthState, authorize, commit, debited_accounts
from ledger.core.blocks import BlockHeader, make_block
from ledger.core.encoding import ZERO_HASH, chain_hash
from ledger.core.journal import (
    DERIVED_KINDS,
    ChainHead,
    Posting,
    TxKind,
    TxRecord,
    TxRequest,
    canonical_account,
    check_mirror_postings,
)
from ledger.core.mirror import ProvenanceAudit
from ledger.core.withdrawals import Withdrawal, check_payout, withdrawal_of, withdrawal_root
from ledger.errors import LedgerError, PayoutMismatch
from ledger.trading.rules import TradingRules
from ledger.trading.state import TradingState, listed_instrument


@dataclass(frozen=True, slots=True)
class Divergence:
    """Where replay first disagreed with the store, and how."""

    seq: int | None
    block: int | None
    problems: tuple[str, ...]

    def describe(self) -> str:
        """One line for humans."""
        where = f"seq {self.seq}" if self.seq is not None else "final state"
        if self.block is not None:
            where = f"block {self.block}"
        return f"divergence at {where}: " + "; ".join(self.problems)


@dataclass(slots=True)
class Replayer:
    """Recomputes state from postings; each ``check_*`` returns the problems it found."""

    head: ChainHead = field(default_factory=ChainHead)
    balances: dict[tuple[str, str], int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    last_block: BlockHeader | None = None
    auth_state: AuthState = field(default_factory=AuthState)
    l1_chain_id: int = genesis.DEFAULT_L1_CHAIN_ID
    l2_chain_id: str = genesis.DEFAULT_L2_CHAIN_ID
    trading: TradingState = field(default_factory=TradingState)
    withdrawals: list[Withdrawal] = field(default_factory=list)  # since the last block
    unpaid: dict[int, Withdrawal] = field(default_factory=dict)  # withdrawals by seq
    mirror: ProvenanceAudit = field(default_factory=ProvenanceAudit)

    def check_signature(self, tx: TxRecord, verified: Auth | str | None = None) -> list[str]:
        """Re-verify the transaction's signature from its metadata alone (or take the
        result of :func:`verify_signature` computed elsewhere) and re-apply the
        authorisation rules: a signature that no longer verifies is a divergence."""
        if tx.seq == 1:
            self.l1_chain_id, self.l2_chain_id = chain_ids(tx)
        if verified is None:
            verified = verify_signature(tx, self.l1_chain_id, self.l2_chain_id)
        if isinstance(verified, str):
            return [f"signature check fails: {verified}"]
        try:
            debited = debited_accounts(tx_postings(tx))
            authorize(tx.kind, tx.key, verified, debited, self.auth_state, tx.recorded_at)
        except LedgerError as exc:
            return [f"signature check fails: {exc}"]
        commit(tx.kind, verified, self.auth_state)
        return []

    def check_rules(self, tx: TxRecord) -> list[str]:
        """Re-run the trading rules on the state before ``tx``: the postings of a computed
        transaction (fill, settlement, ...) must be exactly what they compute, and every
        account that initiated it must still pass its margin check."""
        rules = TradingRules(self.trading)
        request = request_of(tx)
        try:
            transition = rules.transition(request, self.balances, self.auth_state, tx.recorded_at)
            expected = tuple(transition.postings if transition is not None else request.postings)
            stored = tx_postings(tx)
            if expected != stored:
                return [
                    "postings differ from what the trading rules compute: "
                    f"stored {list(stored)}, replay {list(expected)}"
                ]
            if transition is None:
                return []
            after = {
                (p.account, p.asset): self.balances.get((p.account, p.asset), 0) + p.amount
                for p in tx.postings
            }
            transition.check(after)
        except LedgerError as exc:
            return [f"the trading rules reject it on replay: {exc}"]
        transition.commit(tx.postings)
        return []

    def check_trading_projection(self, stored: TradingState) -> list[str]:
        """Compare the stored trading state with replay, and check that
        ``system:clearing`` holds minus the sum of open perp costs."""
        problems: list[str] = []
        mine = {(scope, key): value for scope, key, value in self.trading.rows()}
        theirs = {(scope, key): value for scope, key, value in stored.rows()}
        for row in sorted(set(mine) | set(theirs)):
            if mine.get(row) != theirs.get(row):
                problems.append(
                    f"trading state {row[0]} {row[1]}: "
                    f"stored {theirs.get(row)}, replay {mine.get(row)}"
                )
        text = self.trading.config_text
        perp_costs = sum(
            position.cost
            for (_, name), position in self.trading.positions.items()
            if listed_instrument(text, name).kind == "perp"
        )
        clearing = self.balances.get((CLEARING, "USDC"), 0)
        if clearing + perp_costs:
            problems.append(
                f"system:clearing holds {clearing}, but open perp costs sum to {perp_costs}"
            )
        return problems

    def check_tx(self, tx: TxRecord) -> list[str]:
        """Verify one stored transaction against the replayed state, then apply it."""
        problems: list[str] = []
        expected_seq = self.head.seq + 1
        if tx.seq != expected_seq:
            problems.append(
                f"expected sequence {expected_seq}, found {tx.seq} (missing or reordered row)"
            )
        if tx.prev_hash != self.head.hash:
            problems.append(f"prev_hash does not match the hash of sequence {self.head.seq}")
        if tx.recorded_at <= self.head.recorded_at:
            problems.append("recorded_at does not increase strictly")
        if chain_hash(self.head.hash, tx.encode()) != tx.hash:
            problems.append("stored hash does not match the transaction's contents")
        sums: dict[str, int] = {}
        balances, versions = self.balances, self.versions
        for p in tx.postings:
            sums[p.asset] = sums.get(p.asset, 0) + p.amount
            after = balances.get((p.account, p.asset), 0) + p.amount
            balances[(p.account, p.asset)] = after
            version = versions.get(p.account, 0) + 1
            versions[p.account] = version
            if p.balance_after != after:
                problems.append(
                    f"{p.account} {p.asset}: stored balance_after {p.balance_after}, replay {after}"
                )
            if p.version != version:
                problems.append(f"{p.account}: stored version {p.version}, replay {version}")
            if after < 0 and not is_system(p.account) and not self._signed(p.asset):
                problems.append(f"{p.account} {p.asset} goes negative ({after})")
        unbalanced = {asset: total for asset, total in sums.items() if total}
        if unbalanced:
            problems.append(f"postings do not sum to zero: {unbalanced}")
        try:
            self._track_withdrawals(tx)
        except LedgerError as exc:
            problems.append(str(exc))
        try:
            check_mirror_postings(tx.kind, tx_postings(tx))
        except LedgerError as exc:
            problems.append(str(exc))
        problems += self.mirror.observe(tx)
        self.head = ChainHead(tx.seq, tx.hash, tx.recorded_at)
        return problems

    def _track_withdrawals(self, tx: TxRecord) -> None:
        """Collect the block's claims, and check each payout pays one unpaid claim
        exactly (recipient and amount)."""
        if tx.kind == TxKind.WITHDRAWAL.value:
            claim = withdrawal_of(tx.seq, tx_postings(tx))
            self.withdrawals.append(claim)
            self.unpaid[tx.seq] = claim
        elif tx.kind == TxKind.PAYOUT.value:
            meta = json.loads(tx.metadata)
            seq = meta.get("withdrawal")
            paid = sum(p.amount for p in tx.postings if p.account == BRIDGE)
            if not isinstance(seq, int):
                raise PayoutMismatch(f"payout {tx.seq} names no withdrawal")
            check_payout(self.unpaid.pop(seq, None), seq, str(meta.get("recipient")), paid)

    def _signed(self, asset: str) -> bool:
        try:
            return TradingRules(self.trading).assets[asset].signed
        except KeyError:
            return False

    def check_auth_projection(self, stored: AuthState) -> list[str]:
        """Compare the stored operators, onboarded keys and nonces with replay."""
        return (
            _diff("operators", sorted(stored.operators), sorted(self.auth_state.operators))
            + _diff("onboarded keys", stored.wallets, self.auth_state.wallets)
            + _diff("nonces", stored.nonces, self.auth_state.nonces)
        )

    def check_block(self, stored: BlockHeader, stored_hash: bytes, signature: bytes) -> list[str]:
        """Verify a stored header once replay has reached its last sequence."""
        assert self.head.seq == stored.last_seq, (self.head.seq, stored.last_seq)
        expected = make_block(
            self.last_block,
            stored.last_seq,
            self.head.hash,
            ((acc, asset, bal) for (acc, asset), bal in self.balances.items()),
            stored.sealed_at,
            withdrawal_root(self.withdrawals),
        )
        problems = [
            f"{name}: stored {_show(getattr(stored, name))}, "
            f"replay {_show(getattr(expected, name))}"
            for name in (
                "number",
                "first_seq",
                "prev_block_hash",
                "tx_head_hash",
                "state_root",
                "leaf_count",
                "sealed_at",
                "withdrawal_root",
            )
            if getattr(stored, name) != getattr(expected, name)
        ]
        if stored.hash != stored_hash:
            problems.append("stored block hash does not match the header fields")
        try:
            sealer = eip712.recover(envelopes.seal_event(stored, self.l1_chain_id), signature)
            if sealer not in self.auth_state.operators:
                problems.append(f"block sealed by {sealer}, not a registered operator")
        except LedgerError as exc:
            problems.append(f"block signature: {exc}")
        self.last_block = stored
        self.withdrawals = []
        return problems

    def check_final(
        self,
        balances: Mapping[tuple[str, str], int],
        versions: Mapping[str, int],
        head: ChainHead,
        head_block: int,
    ) -> list[str]:
        """Compare the store's current balances, versions, chain head and newest block
        number with replay."""
        problems: list[str] = []
        replayed_block = self.last_block.number if self.last_block else 0
        if head_block != replayed_block:
            problems.append(
                f"chain head names block {head_block}, the stored blocks end at {replayed_block}"
            )
        for key in sorted(set(balances) | set(self.balances)):
            stored, replayed = balances.get(key), self.balances.get(key)
            if stored != replayed:
                problems.append(f"balance of {key[0]} {key[1]}: stored {stored}, replay {replayed}")
        for account in sorted(set(versions) | set(self.versions)):
            if versions.get(account) != self.versions.get(account):
                problems.append(
                    f"version of {account}: stored {versions.get(account)}, "
                    f"replay {self.versions.get(account)}"
                )
        if head != self.head:
            problems.append(f"chain head: stored seq {head.seq}, replay seq {self.head.seq}")
        totals: dict[str, int] = {}
        for (_, asset), balance in self.balances.items():
            totals[asset] = totals.get(asset, 0) + balance
        problems += [
            f"asset {asset} does not sum to zero overall ({total})"
            for asset, total in totals.items()
            if total
        ]
        return problems


def _diff(name: str, stored: object, replayed: object) -> list[str]:
    return [] if stored == replayed else [f"{name}: stored {stored}, replay {replayed}"]


def chain_ids(first: TxRecord) -> tuple[int, str]:
    """The L1 and L2 chain ids the genesis transaction fixed."""
    settings = genesis.genesis_settings(first)
    return (
        int(settings.get("l1_chain_id", genesis.DEFAULT_L1_CHAIN_ID)),
        settings.get("l2_chain_id", genesis.DEFAULT_L2_CHAIN_ID),
    )


def verify_signature(tx: TxRecord, l1_chain_id: int, l2_chain_id: str) -> Auth | str:
    """Who signed a stored transaction, or why its signature fails (the costly, stateless
    part of the check, so audit can spread it over processes)."""
    try:
        return envelopes.auth_of(request_of(tx), genesis.l2_domain(l2_chain_id), l1_chain_id)
    except LedgerError as exc:
        return str(exc)


def tx_postings(tx: TxRecord) -> tuple[Posting, ...]:
    return tuple(Posting(p.account, p.asset, p.amount) for p in tx.postings)


def request_of(tx: TxRecord) -> TxRequest:
    """The request a stored transaction was written from (its signatures are in metadata).
    A requested effective time is indistinguishable from one equal to the recorded time;
    the ledger's own writers never request one."""
    effective = None if tx.effective_at == tx.recorded_at else tx.effective_at
    if tx.kind in DERIVED_KINDS:
        postings: tuple[Posting, ...] = ()
    elif tx.kind == TxKind.WITHDRAWAL.value:
        postings = _signed_withdrawal(tx)
    else:
        postings = tx_postings(tx)
    return TxRequest(tx.kind, tx.key, postings, tx.metadata, effective, tx.reverses)


def _signed_withdrawal(tx: TxRecord) -> tuple[Posting, ...]:
    """The two legs a withdrawal's owner signed (the account and ``system:withdrawals``),
    without the socialised-loss haircut the rules may have added; the rules re-derive that
    on replay."""
    try:
        message = json.loads(tx.metadata)["auth"]["message"]
        account, amount = canonical_account(str(message["account"])), int(message["amount"])
    except (ValueError, KeyError, TypeError, LedgerError):
        return tx_postings(tx)  # unsigned or malformed: the signature check reports it
    return (Posting(account, USDC.code, -amount), Posting(WITHDRAWALS, USDC.code, amount))


def _show(value: object) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()[:16] + ("…" if value != ZERO_HASH else "")
    return str(value)
