"""The ledger's Python API: the imperative shell around the pure core and the store."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ledger.audit import AuditReport, Progress, audit
from ledger.core import envelopes, genesis, operations
from ledger.core.accounts import normalize_address
from ledger.core.amounts import USDC, Asset, format_amount, parse_amount
from ledger.core.blocks import BlockHeader
from ledger.core.journal import MAX_BATCH, TxRecord, TxRequest, canonical_account
from ledger.core.proofs import AccountProof, build_proof
from ledger.core.withdrawals import WithdrawalProof
from ledger.errors import LimitExceeded, MalformedEnvelope, NotFound, UnknownOperator
from ledger.store.database import check_schema, make_engine, migrate
from ledger.store.sql import Receipt, SqlStore, StatementLine
from ledger.trading.rules import TradingAssets
from ledger.venue import Venue
from ledger.wallet.signer import Wallet

Clock = Callable[[], int]


def now_us() -> int:
    """Wall-clock time in microseconds since the Unix epoch."""
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class Balance:
    """An account's balance in one asset as of a sequence number."""

    account: str
    asset: Asset
    units: int
    seq: int

    def to_json(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "asset": self.asset.code,
            "balance": format_amount(self.units, self.asset),
            "seq": self.seq,
        }


class Ledger(Venue):
    """A hash-chained double-entry ledger on SQLite (default) or PostgreSQL, with the
    trading venue's methods (:class:`~ledger.venue.Venue`).

    Nothing enters the journal unsigned: user actions carry their owner's SNIP-12 signature
    (see :class:`~ledger.wallet.Wallet`), system events the operator's EIP-712 signature.
    Amounts are ``int`` base units (USDC: 1 = 0.000001) or decimal strings (``"100.25"``).
    """

    def __init__(
        self, url: str | None = None, *, clock: Clock = now_us, operator: Wallet | None = None
    ) -> None:
        self.engine = make_engine(url)
        check_schema(self.engine)
        self.store = SqlStore(self.engine)
        self.clock = clock
        self.operator = operator
        settings = self.store.settings()
        self.l1_chain_id = int(settings.get("l1_chain_id", genesis.DEFAULT_L1_CHAIN_ID))
        self.domain = genesis.l2_domain(settings.get("l2_chain_id", genesis.DEFAULT_L2_CHAIN_ID))

    @classmethod
    def init(
        cls,
        url: str | None = None,
        *,
        operator: Wallet,
        l2_chain_id: str = genesis.DEFAULT_L2_CHAIN_ID,
        clock: Clock = now_us,
        instruments: str | None = None,
        list_instruments: bool = True,
    ) -> Ledger:
        """Run the migrations (idempotent) and, on an empty ledger, record genesis: the
        operator key (signed by itself) with the chain ids of the signing domains, then
        the instrument listing (``instruments``: TOML text; default: the shipped one;
        ``list_instruments=False`` leaves a payments-only ledger that can list later)."""
        engine = make_engine(url)
        migrate(engine)
        engine.dispose()
        book = cls(url, clock=clock, operator=operator)
        if book.store.head().seq == 0:
            registration = genesis.operator_registration(
                operator.address,
                "genesis",
                l1_chain_id=operator.l1_chain_id,
                l2_chain_id=l2_chain_id,
            )
            book.store.append([operator.sign_system(registration)], clock())
            book.close()
            book = cls(url, clock=clock, operator=operator)
            if list_instruments:
                book.list_instruments(instruments)
        return book

    def close(self) -> None:
        """Release database connections."""
        self.engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writes
    def submit(self, requests: Sequence[TxRequest]) -> list[Receipt]:
        """Verify every request's signature and commit the batch atomically."""
        if not requests:
            return []
        if len(requests) > MAX_BATCH:
            raise LimitExceeded(
                f"a batch holds at most {MAX_BATCH} transactions, got {len(requests)}"
            )
        verified = [
            request._replace(auth=envelopes.auth_of(request, self.domain, self.l1_chain_id))
            for request in requests
        ]
        return self.store.append(verified, self.clock())

    def submit_signed(self, envelope: Mapping[str, Any]) -> Receipt:
        """Verify a signed envelope (a user action or an onboarding) and apply it."""
        return self.submit([self.request_for(envelope)])[0]

    def request_for(self, envelope: Mapping[str, Any]) -> TxRequest:
        """The journal request a signed envelope asks for; :meth:`submit` then verifies its
        signatures (once)."""
        if not isinstance(envelope, Mapping):
            raise MalformedEnvelope("a signed envelope is a JSON object")
        if envelope.get("format") == envelopes.ONBOARDING_FORMAT:
            auth, checked = envelopes.parse_onboarding(envelope, self.domain, self.l1_chain_id)
            return envelopes.request_for_onboarding(auth, checked)._replace(auth=None)
        action = envelopes.parse_action(envelope, self.domain)
        return envelopes.request_for_action(action)._replace(auth=None)

    def _operator(self) -> Wallet:
        if self.operator is None:
            raise UnknownOperator(
                "system events are operator-signed: open the ledger with an operator key "
                "(LEDGER_OPERATOR_KEYSTORE)"
            )
        return self.operator

    def operator_signed(self, request: TxRequest) -> TxRequest:
        """``request`` signed by this ledger's operator key (for batches of system events)."""
        return self._operator().sign_system(request)

    def system(self, request: TxRequest) -> Receipt:
        """Sign ``request`` with the operator key and apply it."""
        return self.submit([self.operator_signed(request)])[0]

    def add_operator(self, address: str) -> Receipt:
        """Register another operator key, signed by a current one."""
        owner = normalize_address(address)
        return self.system(genesis.operator_registration(owner, f"operator/{owner}"))

    def deposit(
        self,
        account: str,
        amount: int | str,
        *,
        key: str | None = None,
        metadata: Mapping[str, object] | None = None,
        asset: str = USDC.code,
    ) -> Receipt:
        """Credit USDC (or a listed spot asset such as BTC) arriving from outside the venue
        (operator-signed)."""
        kind = self._asset(asset)
        if kind.signed:
            raise NotFound(f"{asset} is a position, not an asset that can be deposited")
        units = parse_amount(amount, kind) if isinstance(amount, str) else amount
        return self.system(operations.deposit(account, units, _key(key), metadata, kind))

    def onboard(self, wallet: Wallet) -> Receipt:
        """Record ``wallet``'s onboarding (it signs; the ledger verifies)."""
        return self.submit_signed(wallet.onboarding(self.domain))

    def withdraw(
        self,
        account: str,
        amount: int | str,
        *,
        wallet: Wallet,
        nonce: int | None = None,
        expiry: int | None = None,
    ) -> Receipt:
        """Debit USDC leaving the venue, signed by the owner's ``wallet``."""
        envelope = wallet.withdraw(account, amount, self.domain, nonce, expiry)
        return self.submit_signed(envelope)

    def transfer(
        self,
        source: str,
        target: str,
        amount: int | str,
        *,
        wallet: Wallet,
        nonce: int | None = None,
        expiry: int | None = None,
    ) -> Receipt:
        """Move USDC between two accounts, signed by the source owner's ``wallet``."""
        envelope = wallet.transfer(source, target, amount, self.domain, nonce, expiry)
        return self.submit_signed(envelope)

    def reverse(self, seq: int, *, reason: str, key: str | None = None) -> Receipt:
        """Post the exact opposite of transaction ``seq`` (an operator correction)."""
        original = self.store.transaction(seq)
        # The store checks, under its write lock, that ``seq`` may still be reversed.
        return self.system(operations.reversal(original, _key(key), reason))

    def seal(self) -> BlockHeader:
        """Seal the transactions since the last block into a new, operator-signed block."""
        operator = self._operator()
        return self.store.seal(self.clock(), operator.address, operator.sign_block)

    # ------------------------------------------------------------------ reads
    def transaction(self, seq: int) -> TxRecord:
        """The committed transaction at ``seq``."""
        return self.store.transaction(seq)

    def balance(self, account: str, asset: str = USDC.code, at_seq: int | None = None) -> Balance:
        """Balance of ``account`` now, or as of sequence ``at_seq``."""
        canonical = canonical_account(account)
        units, seq = self.store.balance(canonical, self._asset(asset).code, at_seq)
        return Balance(canonical, self._asset(asset), units, seq)

    def history(self, account: str, asset: str = USDC.code) -> list[StatementLine]:
        """Statement of ``account``: every posting with its running balance."""
        return self.store.history(canonical_account(account), self._asset(asset).code)

    def block(self, number: int | None = None) -> BlockHeader:
        """Block ``number``, default the newest."""
        return self.store.block(number)

    def proof(self, account: str, asset: str = USDC.code, block: int | None = None) -> AccountProof:
        """Merkle inclusion proof of ``account``'s balance in ``block`` (default newest)."""
        header = self.store.block(block)
        leaves = self.store.balances_at(header.last_seq)
        return build_proof(canonical_account(account), self._asset(asset), leaves, header)

    def withdrawal_proof(self, seq: int) -> WithdrawalProof:
        """The proof with which the settlement vault pays withdrawal ``seq`` on L1 (its
        block must be sealed)."""
        return self.store.withdrawal_proof(seq)

    def audit(self, progress: Progress | None = None, workers: int | None = None) -> AuditReport:
        """Replay from genesis: re-verify every signature and recompute every balance,
        version, hash and root (signature checks in ``workers`` processes)."""
        return audit(self.store, progress, workers)

    def assets(self) -> Mapping[str, Asset]:
        """Every asset: USDC, listed underlyings (spot) and every listed perp and option."""
        return TradingAssets(self.store.trading_state([]))

    def _asset(self, code: str) -> Asset:
        assets = self.assets()
        if code not in assets:
            raise NotFound(
                f"unknown asset {code!r}; known: {', '.join(sorted(assets))} and listed options"
            )
        return assets[code]


def _units(amount: int | str) -> int:
    return parse_amount(amount, USDC) if isinstance(amount, str) else amount


def _key(key: str | None) -> str:
    return key if key is not None else f"auto:{uuid.uuid4().hex}"
