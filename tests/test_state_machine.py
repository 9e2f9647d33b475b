"""A Hypothesis state machine drives the ledger against an in-memory model, on each store.

Every example gets a fresh database holding genesis (the operator key) and the onboardings
of ALICE, BOB, CAROL and NEVER; DAVE onboards when a rule says so. The rules make deposits
and reversals (signed by the operator) and withdrawals and transfers (signed by the owner's
wallet, with explicit nonces that increase per owner, sometimes by a gap) among four user
addresses and a sub-account. They retry an operator event with the same key (the original
receipt comes back and nothing is written), replay an accepted user action (refused: its
nonce is used), reuse a key or a nonce for a different payload (refused), send commands
that must fail (overdraft, unknown source, same account, bad amounts, someone else's funds,
a wallet that never onboarded, a used nonce, an expired action, unsigned or wrongly signed
requests, system events without the operator key) and atomic batches that may hold a
failing or conflicting item, move the clock backwards and forwards, and seal blocks. After
every step the store must equal the model exactly: the journal rows, balances, versions,
statements, key map, chain, blocks, onboarded wallets and nonces.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache, partial
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from ledger import Ledger, Receipt, TxRecord, TxRequest, make_request
from ledger.core import genesis, operations
from ledger.core.accounts import BRIDGE, WITHDRAWALS, is_system, owner_of, to_checksum_address
from ledger.core.amounts import format_amount
from ledger.core.authorization import AuthState
from ledger.core.blocks import state_root
from ledger.core.encoding import ZERO_HASH, chain_hash
from ledger.core.replay import request_of
from ledger.errors import (
    ActionExpired,
    AlreadyReversed,
    AuthorizationError,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidAmount,
    LedgerError,
    MalformedEnvelope,
    NonceReused,
    NotFound,
    NothingToSeal,
    NotOnboarded,
    NotOwner,
    NotReversible,
    SameAccount,
    UnknownAccount,
    UnknownOperator,
)
from ledger.wallet import Wallet
from tests.conftest import (
    ALICE,
    BOB,
    CAROL,
    OPERATOR,
    STORES,
    WALLETS,
    drop_postgres_database,
    new_postgres_database,
)
from tests.conftest import test_wallet as make_wallet

DAVE_WALLET = make_wallet("dave")  # onboards only through the `onboard_dave` rule
NEVER_WALLET = make_wallet("never")  # onboarded, never credited: always an unknown source
STRANGER_WALLET = make_wallet("stranger")  # never onboarded
DAVE = DAVE_WALLET.address
NEVER = NEVER_WALLET.address
STRANGER = STRANGER_WALLET.address
ISO = f"{ALICE}:iso"
USERS = (ALICE, BOB, CAROL, DAVE, ISO)
SIGNERS: dict[str, Wallet] = {
    **WALLETS,
    DAVE: DAVE_WALLET,
    NEVER: NEVER_WALLET,
    STRANGER: STRANGER_WALLET,
}
ONBOARDED_AT_SETUP = (ALICE, BOB, CAROL, NEVER)
USER_KINDS = ("withdrawal", "transfer")
USDC = "USDC"
START_US = 1_700_000_000_000_000
# Far beyond any time the clock rule reaches (it moves at most 3 s per step).
FAR_EXPIRY = START_US // 1_000_000 + 86_400
DOMAIN = genesis.l2_domain(genesis.DEFAULT_L2_CHAIN_ID)

AMOUNTS = st.one_of(
    st.integers(1, 1_000),
    st.integers(1, 100_000_000),
    st.sampled_from([1, 1_000_000, 10**12]),
)
# How a debit amount relates to the source's model balance: as drawn, all of it, one more
# than all of it (an overdraft), or half of it.
PORTIONS = st.sampled_from(["given", "all", "over", "half", "tenth"])
# Mostly debit an account that holds funds, sometimes any account (maybe never credited).
FUNDED = st.sampled_from([True, True, True, False])
# How far past the owner's last nonce a user action's nonce is (nonces may skip).
GAPS = st.sampled_from([1, 1, 1, 2, 1_000])
# Who signs a user action: mostly its owner (None), sometimes another onboarded wallet.
SIGNED_BY = st.sampled_from([*[None] * 24, *ONBOARDED_AT_SETUP])
# A user action's expiry: far away, exactly when it is recorded (still valid), or the
# second before (expired).
EXPIRIES = st.sampled_from(["far", "far", "far", "far", "far", "edge", "past"])

# Signing a user action costs ~6 ms and verifying ~3 ms (twice on submission; the audit
# re-verifies every stored signature): fewer, shorter examples than an unsigned ledger.
EXAMPLES = {"sqlite": 30, "postgresql": 10}
STEPS = 30


@cache
def onboarding(owner: str) -> dict[str, Any]:
    """``owner``'s onboarding envelope (deterministic: signed once per test session)."""
    return SIGNERS[owner].onboarding(DOMAIN)


def spelled(account: str, checksum: bool) -> str:
    """``account`` as given, or with its owner in EIP-55 mixed case (the same account)."""
    if not checksum or is_system(account):
        return account
    owner, sep, name = account.partition(":")
    return to_checksum_address(owner) + sep + name


@dataclass(frozen=True, slots=True)
class Command:
    """A transaction the model can predict and the ledger can be asked to make."""

    kind: str  # deposit | withdrawal | transfer | reversal | operator_keys | onboarding
    source: str | None = None
    target: str | None = None
    amount: int = 0
    original: TxRecord | None = None  # reversal: the transaction it reverses
    reason: str = ""
    # User actions: who signs, with which nonce (their key is signer/nonce) and expiry.
    signer: str = ""
    nonce: int = 0
    expiry: int = FAR_EXPIRY
    signed: TxRequest | None = None  # genesis and onboardings: the signed request

    @property
    def user(self) -> bool:
        return self.kind in USER_KINDS

    @property
    def user_key(self) -> str:
        assert self.user
        return f"{self.signer}/{self.nonce}"

    def legs(self) -> list[tuple[str, int]]:
        """Postings ``(account, amount)`` in the order the ledger records them."""
        if self.kind == "deposit":
            assert self.target is not None
            return [(BRIDGE, -self.amount), (self.target, self.amount)]
        if self.kind == "withdrawal":
            assert self.source is not None
            return [(self.source, -self.amount), (WITHDRAWALS, self.amount)]
        if self.kind == "transfer":
            assert self.source is not None and self.target is not None
            return [(self.source, -self.amount), (self.target, self.amount)]
        if self.kind == "reversal":
            assert self.original is not None
            return [(p.account, -p.amount) for p in self.original.postings]
        return []  # genesis and onboardings move no money

    def envelope(self, *, checksum: bool = False, as_str: bool = False) -> dict[str, Any]:
        """The user action signed by ``signer``'s wallet."""
        assert self.source is not None
        wallet = SIGNERS[self.signer]
        amount: int | str = format_amount(self.amount) if as_str else self.amount
        source = spelled(self.source, checksum)
        if self.kind == "withdrawal":
            return wallet.withdraw(source, amount, DOMAIN, self.nonce, self.expiry)
        assert self.kind == "transfer" and self.target is not None
        target = spelled(self.target, not checksum)
        return wallet.transfer(source, target, amount, DOMAIN, self.nonce, self.expiry)

    def request(self, book: Ledger, key: str) -> TxRequest:
        """The signed request (``key`` is ignored by user actions: theirs is signer/nonce)."""
        if self.signed is not None:
            return self.signed
        if self.user:
            return book.request_for(self.envelope())
        if self.kind == "deposit":
            assert self.target is not None
            return OPERATOR.sign_system(operations.deposit(self.target, self.amount, key))
        assert self.kind == "reversal" and self.original is not None
        return OPERATOR.sign_system(operations.reversal(self.original, key, self.reason))

    def call(
        self,
        book: Ledger,
        key: str | None,
        *,
        checksum: bool,
        as_str: bool,
        envelope: bool = False,
    ) -> Receipt:
        """Through the public single-command API, spelled and typed as asked; a user
        action either through ``withdraw``/``transfer`` or as an envelope the client
        signed itself (``envelope``)."""
        amount: int | str = format_amount(self.amount) if as_str else self.amount
        if self.kind == "deposit":
            assert self.target is not None
            return book.deposit(spelled(self.target, checksum), amount, key=key)
        if self.kind == "reversal":
            assert self.original is not None
            return book.reverse(self.original.seq, reason=self.reason, key=key)
        if envelope:
            return book.submit_signed(self.envelope(checksum=checksum, as_str=as_str))
        assert self.source is not None
        wallet, source = SIGNERS[self.signer], spelled(self.source, checksum)
        if self.kind == "withdrawal":
            return book.withdraw(
                source, amount, wallet=wallet, nonce=self.nonce, expiry=self.expiry
            )
        assert self.kind == "transfer" and self.target is not None
        target = spelled(self.target, not checksum)
        return book.transfer(
            source, target, amount, wallet=wallet, nonce=self.nonce, expiry=self.expiry
        )


@dataclass(slots=True)
class Model:
    """What the ledger must hold: balances, versions, the journal, the key map, the
    onboarded wallets and each owner's last nonce."""

    balances: dict[str, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    txs: list[TxRecord] = field(default_factory=list)
    commands: dict[str, Command] = field(default_factory=dict)  # key -> command
    reversed: set[int] = field(default_factory=set)
    snapshots: list[dict[str, int]] = field(default_factory=lambda: [{}])  # balances per seq
    sealed_seq: int = 0
    blocks: int = 0
    sealed_at: int = 0
    onboarded: set[str] = field(default_factory=set)
    nonces: dict[str, int] = field(default_factory=dict)  # owner -> last accepted nonce

    @property
    def seq(self) -> int:
        return len(self.txs)

    @property
    def head_hash(self) -> bytes:
        return self.txs[-1].hash if self.txs else ZERO_HASH

    @property
    def head_recorded_at(self) -> int:
        return self.txs[-1].recorded_at if self.txs else 0

    def tx(self, key: str) -> TxRecord:
        return next(tx for tx in self.txs if tx.key == key)

    def refusal(
        self,
        command: Command,
        balances: dict[str, int],
        nonces: dict[str, int],
        recorded_at: int,
    ) -> type[LedgerError] | None:
        """The error the ledger raises for ``command`` against ``balances`` and ``nonces``
        when recorded at ``recorded_at``, or None: first who signed, then the money."""
        if command.user:
            signer = command.signer
            assert command.source is not None
            if command.user_key in self.commands:
                return NonceReused
            if signer not in self.onboarded:
                return NotOnboarded
            if owner_of(command.source) != signer:
                return NotOwner
            if command.nonce <= nonces.get(signer, 0):
                return NonceReused
            if command.expiry * 1_000_000 < recorded_at:
                return ActionExpired
        for account, amount in command.legs():
            if is_system(account):
                continue
            if account not in balances and amount < 0:
                return UnknownAccount
            if balances.get(account, 0) + amount < 0:
                return InsufficientFunds
        return None

    def apply(self, tx: TxRecord, key: str, command: Command) -> None:
        for p in tx.postings:
            self.balances[p.account] = self.balances.get(p.account, 0) + p.amount
            self.versions[p.account] = self.versions.get(p.account, 0) + 1
        self.txs.append(tx)
        self.commands[key] = command
        if command.original is not None:
            self.reversed.add(command.original.seq)
        if command.user:
            self.nonces[command.signer] = command.nonce
        if command.kind == "onboarding":
            self.onboarded.add(key.removeprefix("onboard/"))
        self.snapshots.append(dict(self.balances))


class LedgerMachine(RuleBasedStateMachine):
    """One fresh ledger database per example, compared with :class:`Model` after each step."""

    keys = Bundle("keys")
    store_name = "sqlite"

    def __init__(self) -> None:
        super().__init__()
        store = self.store_name
        self.now = START_US
        self.tmpdir: str | None = None
        if store == "sqlite":
            self.tmpdir = tempfile.mkdtemp(prefix="ledger-sm-")
            self.url = f"sqlite:///{self.tmpdir}/ledger.db"
        else:
            self.url = new_postgres_database()
        # A payments-only ledger: the model tracks money movements, not trading.
        self.book = Ledger.init(
            self.url, operator=OPERATOR, clock=self.clock, list_instruments=False
        )
        # The same ledger opened without the operator key: it accepts user actions only.
        self.reader = Ledger(self.url, clock=self.clock)
        assert self.book.domain == self.reader.domain == DOMAIN
        self.model = Model()
        self.key_counter = 0
        self.idle_sealed = False
        self.audited_seq = 0
        (genesis_tx,) = self.book.store.iter_transactions()
        assert (genesis_tx.seq, genesis_tx.kind, genesis_tx.key) == (1, "operator_keys", "genesis")
        assert genesis_tx.recorded_at == START_US
        self.model.apply(
            genesis_tx, genesis_tx.key, Command("operator_keys", signed=request_of(genesis_tx))
        )
        for owner in ONBOARDED_AT_SETUP:
            self.onboard(owner)

    def clock(self) -> int:
        return self.now

    def teardown(self) -> None:
        try:
            report = self.book.audit()
            assert report.ok, report.to_json()
        finally:
            self.book.close()
            self.reader.close()
            if self.tmpdir is not None:
                shutil.rmtree(self.tmpdir, ignore_errors=True)
            else:
                drop_postgres_database(self.url)

    # ------------------------------------------------------------------ helpers
    def fresh_key(self, offset: int = 0) -> str:
        """The next unused key of an operator event. Failed writes do not consume it: the
        next write reuses it, which proves a refused command left no trace of its key."""
        return f"key-{self.key_counter + offset}"

    def next_nonce(self, owner: str, gap: int = 1) -> int:
        """A nonce ``gap`` past the owner's last accepted one. Refused actions do not use
        theirs up: with a gap of 1 the next action reuses it, which proves the refusal
        left no trace of its nonce."""
        return self.model.nonces.get(owner, 0) + gap

    def user_command(
        self,
        kind: str,
        source: str,
        target: str | None,
        amount: int,
        *,
        gap: int = 1,
        expiry: str = "far",
        signer: str | None = None,
    ) -> Command:
        """A withdrawal or transfer signed by ``signer`` (default: the source's owner)."""
        signer = signer if signer is not None else owner_of(source)
        if expiry == "far":
            expires = FAR_EXPIRY
        else:
            # The clock moves on to a whole second, so the action is recorded exactly at its
            # expiry ("edge": still valid) or one second after it ("past": expired).
            second = -(-self.expected_recorded_at(self.model.head_recorded_at) // 1_000_000)
            self.now = second * 1_000_000
            expires = second if expiry == "edge" else second - 1
        return Command(
            kind,
            source=source,
            target=target,
            amount=amount,
            signer=signer,
            nonce=self.next_nonce(signer, gap),
            expiry=expires,
        )

    def onboard(self, owner: str) -> None:
        receipt = self.book.submit_signed(onboarding(owner))
        assert not receipt.duplicate
        assert receipt.tx.key == f"onboard/{owner}"
        self.commit(
            receipt.tx, receipt.tx.key, Command("onboarding", signed=request_of(receipt.tx))
        )

    def debit_amount(self, account: str, raw: int, portion: str) -> int:
        balance = self.model.balances.get(account, 0)
        if portion == "all":
            return max(balance, 1)
        if portion == "over":
            return balance + 1 + raw % 1_000
        if portion == "half":
            return max(balance // 2, 1)
        if portion == "tenth":
            return max(balance // 10, 1)
        return raw

    def source(self, account: str, funded: bool) -> str:
        """``account``, or (when ``funded``) an account with money, picked by ``account``."""
        rich = [user for user in USERS if self.model.balances.get(user, 0) > 0]
        if not funded or not rich:
            return account
        return rich[USERS.index(account) % len(rich)]

    def expected_recorded_at(self, previous: int) -> int:
        return max(self.now, previous + 1)

    def first_deposit(self) -> TxRecord:
        return next(tx for tx in self.model.txs if tx.kind == "deposit")

    def check_committed(
        self, tx: TxRecord, key: str, command: Command, previous: TxRecord | None
    ) -> None:
        """``tx`` is exactly what the model predicts as the next transaction."""
        prev_hash = previous.hash if previous else ZERO_HASH
        prev_at = previous.recorded_at if previous else 0
        assert tx.seq == (previous.seq if previous else 0) + 1
        assert tx.key == key
        assert tx.kind == command.kind
        assert tx.prev_hash == prev_hash
        assert tx.hash == chain_hash(prev_hash, tx.encode())
        assert tx.recorded_at == self.expected_recorded_at(prev_at)
        assert tx.effective_at == tx.recorded_at
        assert tx.reverses == (command.original.seq if command.original else None)
        assert [(p.account, p.asset, p.amount) for p in tx.postings] == [
            (account, USDC, amount) for account, amount in command.legs()
        ]
        if command.user:  # the stored metadata is the signed envelope (the audit verifies it)
            envelope = json.loads(tx.metadata)["auth"]
            assert envelope["action"] == {"withdrawal": "withdraw"}.get(tx.kind, tx.kind)
            assert envelope["signer"] == SIGNERS[command.signer].signer_json()
            assert envelope["message"]["amount"] == str(command.amount)
            assert envelope["message"]["nonce"] == str(command.nonce)
            assert envelope["message"]["expiry"] == str(command.expiry)

    def commit(self, tx: TxRecord, key: str, command: Command) -> None:
        self.check_committed(tx, key, command, self.model.txs[-1] if self.model.txs else None)
        for p in tx.postings:
            assert p.balance_after == self.model.balances.get(p.account, 0) + p.amount
            assert p.version == self.model.versions.get(p.account, 0) + 1
        if key == self.fresh_key():
            self.key_counter += 1
        self.model.apply(tx, key, command)

    def expect_refusal(self, error: type[LedgerError], action: Callable[[], object]) -> str:
        head = self.book.store.head()
        with pytest.raises(error) as info:
            action()
        assert type(info.value) is error, repr(info.value)
        assert self.book.store.head() == head, "a refused command wrote a transaction"
        return str(info.value)

    def single(
        self,
        command: Command,
        keyed: bool,
        checksum: bool,
        as_str: bool,
        *,
        envelope: bool = False,
        reader: bool = False,
    ) -> str | MultipleResults[str]:
        book = self.reader if reader else self.book
        if command.user:
            key: str | None = command.user_key
        else:
            assert not reader, "system events need the operator key"
            key = self.fresh_key() if keyed else None
        at = self.expected_recorded_at(self.model.head_recorded_at)
        error = self.model.refusal(command, self.model.balances, self.model.nonces, at)
        if command.kind == "transfer" and command.source == command.target:
            error = SameAccount  # refused before it is even a request

        def call() -> Receipt:
            return command.call(book, key, checksum=checksum, as_str=as_str, envelope=envelope)

        if error is not None:
            self.expect_refusal(error, call)
            return multiple()
        receipt = call()
        assert not receipt.duplicate
        if key is None:
            assert receipt.tx.key.startswith("auto:")
        self.commit(receipt.tx, receipt.tx.key, command)
        return receipt.tx.key

    # ------------------------------------------------------------------ rules
    @initialize(
        target=keys,
        deposits=st.lists(st.tuples(st.sampled_from(USERS), AMOUNTS), min_size=1, max_size=4),
    )
    def fund(self, deposits: list[tuple[str, int]]) -> MultipleResults[str]:
        keys = []
        for account, amount in deposits:
            command = Command("deposit", target=account, amount=amount)
            receipt = command.call(self.book, self.fresh_key(), checksum=False, as_str=False)
            self.commit(receipt.tx, receipt.tx.key, command)
            keys.append(receipt.tx.key)
        return multiple(*keys)

    @rule(clock_step=st.integers(-3_000_000, 3_000_000))
    def move_clock(self, clock_step: int) -> None:
        """Wall clocks jump, also backwards: recorded_at must still strictly increase."""
        self.now += clock_step

    @precondition(lambda self: DAVE not in self.model.onboarded)
    @rule()
    def onboard_dave(self) -> None:
        """Until now DAVE could receive funds but not move them (NotOnboarded)."""
        self.onboard(DAVE)

    @rule(
        target=keys,
        account=st.sampled_from(USERS),
        amount=AMOUNTS,
        keyed=st.booleans(),
        checksum=st.booleans(),
        as_str=st.booleans(),
    )
    def deposit(
        self, account: str, amount: int, keyed: bool, checksum: bool, as_str: bool
    ) -> str | MultipleResults[str]:
        return self.single(
            Command("deposit", target=account, amount=amount), keyed, checksum, as_str
        )

    @rule(
        target=keys,
        account=st.sampled_from(USERS),
        raw=AMOUNTS,
        portion=PORTIONS,
        funded=FUNDED,
        gap=GAPS,
        expiry=EXPIRIES,
        signed_by=SIGNED_BY,
        envelope=st.booleans(),
        reader=st.booleans(),
        checksum=st.booleans(),
        as_str=st.booleans(),
    )
    def withdraw(
        self,
        account: str,
        raw: int,
        portion: str,
        funded: bool,
        gap: int,
        expiry: str,
        signed_by: str | None,
        envelope: bool,
        reader: bool,
        checksum: bool,
        as_str: bool,
    ) -> str | MultipleResults[str]:
        account = self.source(account, funded)
        amount = self.debit_amount(account, raw, portion)
        command = self.user_command(
            "withdrawal", account, None, amount, gap=gap, expiry=expiry, signer=signed_by
        )
        return self.single(command, True, checksum, as_str, envelope=envelope, reader=reader)

    @rule(
        target=keys,
        source=st.sampled_from(USERS),
        target_account=st.sampled_from(USERS),
        raw=AMOUNTS,
        portion=PORTIONS,
        funded=FUNDED,
        gap=GAPS,
        expiry=EXPIRIES,
        signed_by=SIGNED_BY,
        envelope=st.booleans(),
        reader=st.booleans(),
        checksum=st.booleans(),
        as_str=st.booleans(),
    )
    def transfer(
        self,
        source: str,
        target_account: str,
        raw: int,
        portion: str,
        funded: bool,
        gap: int,
        expiry: str,
        signed_by: str | None,
        envelope: bool,
        reader: bool,
        checksum: bool,
        as_str: bool,
    ) -> str | MultipleResults[str]:
        source = self.source(source, funded)
        amount = self.debit_amount(source, raw, portion)
        command = self.user_command(
            "transfer", source, target_account, amount, gap=gap, expiry=expiry, signer=signed_by
        )
        return self.single(command, True, checksum, as_str, envelope=envelope, reader=reader)

    @precondition(lambda self: any(tx.postings for tx in self.model.txs))
    @rule(target=keys, pick=st.integers(0, 10**6), keyed=st.booleans())
    def reverse(self, pick: int, keyed: bool) -> str | MultipleResults[str]:
        # Money movements only: genesis and onboardings have nothing to reverse.
        movements = [tx for tx in self.model.txs if tx.postings]
        original = movements[pick % len(movements)]
        command = Command("reversal", original=original, reason=f"undo {original.seq}")
        if original.kind == "withdrawal":  # it may be paid out on L1 already
            key = self.fresh_key() if keyed else None
            self.expect_refusal(
                NotReversible,
                lambda: self.book.reverse(original.seq, reason=command.reason, key=key),
            )
            return multiple()
        if original.kind == "reversal" or original.seq in self.model.reversed:
            key = self.fresh_key() if keyed else None
            self.expect_refusal(
                AlreadyReversed,
                lambda: self.book.reverse(original.seq, reason=command.reason, key=key),
            )
            return multiple()
        return self.single(command, keyed, checksum=False, as_str=False)

    @rule(key=keys, via=st.sampled_from(["api", "submit", "batch"]), checksum=st.booleans())
    def retry_same_payload(self, key: str, via: str, checksum: bool) -> None:
        """An operator event with the same key and payload returns the original receipt
        and writes nothing, even when it would be refused now (the funds have moved on
        since). A user action is not idempotent: replaying it (its stored envelope, or
        the same action signed again) is refused as a used nonce and writes nothing."""
        command = self.model.commands[key]
        original = self.model.tx(key)
        head = self.book.store.head()
        first = self.first_deposit()
        first_request = self.model.commands[first.key].request(self.book, first.key)
        if command.user:
            stored = json.loads(original.metadata)["auth"]
            replays: dict[str, Callable[[], object]] = {
                "api": lambda: command.call(
                    self.book, key, checksum=checksum, as_str=checksum, envelope=checksum
                ),
                "submit": lambda: self.book.submit([self.book.request_for(stored)]),
                "batch": lambda: self.book.submit([first_request, self.book.request_for(stored)]),
            }
            message = self.expect_refusal(NonceReused, replays[via])
            assert (
                f"nonce {command.nonce} of {command.signer} was already used "
                f"(sequence {original.seq})"
            ) in message
            return
        if via == "api":
            receipt = command.call(self.book, key, checksum=checksum, as_str=checksum)
        elif via == "submit":
            (receipt,) = self.book.submit([command.request(self.book, key)])
        else:
            # A batch of two committed keys (this one and the first deposit): duplicates.
            receipts = self.book.submit([command.request(self.book, key), first_request])
            assert receipts[1].duplicate and receipts[1].tx == first
            receipt = receipts[0]
        assert receipt.duplicate
        assert (receipt.seq, receipt.hash) == (original.seq, original.hash)
        assert receipt.tx == original
        assert self.book.store.head() == head

    @rule(
        key=keys,
        change=st.sampled_from(["amount", "kind"]),
        via=st.sampled_from(["api", "submit", "batch"]),
        other=st.sampled_from(USERS),
    )
    def retry_different_payload(self, key: str, change: str, via: str, other: str) -> None:
        """The same key with a different payload (amount, kind, or a reversal's reason) is
        refused and writes nothing, also when the batch holds a valid new item: an operator
        event as an idempotency conflict, a user action (the same nonce) as a used nonce."""
        command = self.model.commands[key]
        # A valid fresh deposit first in the batch: the conflict refuses the whole batch.
        fresh = Command("deposit", target=BOB, amount=1).request(self.book, self.fresh_key())
        error: type[LedgerError] = IdempotencyConflict
        expected = repr(key)
        if command.kind == "deposit" and change == "kind":
            # The same postings and key, as another kind of operator event.
            assert command.target is not None
            deposit = operations.deposit(command.target, command.amount, key)
            settlement = make_request("settlement", key, deposit.postings)
            request = OPERATOR.sign_system(settlement)
            api: Callable[[], object] = partial(self.book.system, settlement)
        else:
            if command.kind == "reversal":
                changed = replace(command, reason=command.reason + "!")
            elif command.user and change == "kind" and command.kind == "transfer":
                changed = replace(command, kind="withdrawal", target=None)
            elif command.user and change == "kind":
                assert command.source is not None
                if other == command.source:
                    other = USERS[(USERS.index(other) + 1) % len(USERS)]
                changed = replace(command, kind="transfer", target=other)
            else:
                changed = replace(command, amount=command.amount + 1)
            request = changed.request(self.book, key)
            api = partial(changed.call, self.book, key, checksum=False, as_str=False)
            if command.user:  # the same nonce, signed for something else
                error = NonceReused
                expected = f"nonce {command.nonce} of {command.signer} was already used"
        actions: dict[str, Callable[[], object]] = {
            "api": api,
            "submit": lambda: self.book.submit([request]),
            "batch": lambda: self.book.submit([fresh, request]),
        }
        message = self.expect_refusal(error, actions[via])
        assert expected in message
        assert self.book.store.transaction_by_key(fresh.key) is None

    @precondition(lambda self: any(c.user for c in self.model.commands.values()))
    @rule(
        pick=st.integers(0, 10**6),
        change=st.sampled_from(["none", "none", "amount", "kind"]),
        via=st.sampled_from(["api", "submit", "batch"]),
        other=st.sampled_from(USERS),
    )
    def replay_user_action(self, pick: int, change: str, via: str, other: str) -> None:
        """An accepted user action (any of them, not only those in the ``keys`` bundle)
        replayed as stored, or its nonce signed again for another payload: refused."""
        actions = [key for key, command in self.model.commands.items() if command.user]
        key = actions[pick % len(actions)]
        if change == "none":
            self.retry_same_payload(key, via, checksum=pick % 2 == 1)
        else:
            self.retry_different_payload(key, change, via, other)

    @rule(
        case=st.sampled_from(
            [
                "overdraft withdraw",
                "overdraft transfer",
                "unknown withdraw",
                "unknown transfer",
                "same account",
                "too many decimals",
                "zero",
                "zero decimal",
                "zero transfer",
                "negative",
                "not owner",
                "not onboarded",
                "used nonce",
                "unsigned in the store",
                "unsigned",
                "user-signed deposit",
                "no operator key",
            ]
        ),
        account=st.sampled_from(USERS),
        other=st.sampled_from(USERS),
        extra=st.integers(1, 10**9),
        decimals=st.integers(7, 9),
    )
    def invalid_command(
        self, case: str, account: str, other: str, extra: int, decimals: int
    ) -> None:
        """Commands that must fail, each with a fresh key or nonce: nothing is written and
        the key or nonce stays unused (the next successful write takes it)."""
        book, key, model = self.book, self.fresh_key(), self.model
        balance = model.balances.get(account, 0)
        if other == account:
            other = USERS[(USERS.index(account) + 1) % len(USERS)]
        overdraft = balance + extra
        opened = account in model.balances
        decimal_text = f"{extra % 1000}." + str(extra).rjust(decimals, "1")[-decimals:]
        owner = owner_of(account)
        wallet, nonce = SIGNERS[owner], self.next_nonce(owner)
        at = self.expected_recorded_at(model.head_recorded_at)

        def predicted(command: Command) -> type[LedgerError]:
            error = model.refusal(command, model.balances, model.nonces, at)
            assert error is not None
            return error

        def refused(command: Command) -> tuple[type[LedgerError], Callable[[], object]]:
            return predicted(command), lambda: command.call(book, None, checksum=True, as_str=False)

        thieves = sorted(model.onboarded - {owner})
        thief = thieves[extra % len(thieves)]
        used = sorted(model.nonces)
        cases: dict[str, tuple[type[LedgerError], Callable[[], object]]] = {
            # Onboarded owners: a missing or short balance; DAVE before onboarding: that.
            "overdraft withdraw": refused(
                self.user_command("withdrawal", account, None, overdraft)
            ),
            "overdraft transfer": refused(self.user_command("transfer", account, other, overdraft)),
            "unknown withdraw": refused(self.user_command("withdrawal", NEVER, None, extra)),
            "unknown transfer": refused(self.user_command("transfer", NEVER, account, extra)),
            "same account": (
                SameAccount,
                lambda: book.transfer(
                    account, spelled(account, True), extra, wallet=wallet, nonce=nonce
                ),
            ),
            "too many decimals": (
                InvalidAmount,
                lambda: book.deposit(account, decimal_text, key=key),
            ),
            "zero": (InvalidAmount, lambda: book.deposit(account, 0, key=key)),
            "zero decimal": (
                InvalidAmount,
                lambda: book.withdraw(account, "0.000000", wallet=wallet, nonce=nonce),
            ),
            "zero transfer": (
                InvalidAmount,
                lambda: book.transfer(account, other, "0", wallet=wallet, nonce=nonce),
            ),
            "negative": (InvalidAmount, lambda: book.deposit(account, -extra, key=key)),
            "not owner": refused(
                self.user_command("transfer", account, other, max(balance, 1), signer=thief)
            ),
            "not onboarded": refused(
                self.user_command("withdrawal", STRANGER, None, extra, gap=extra)
            ),
            "unsigned in the store": (
                AuthorizationError,
                lambda: book.store.append(
                    [
                        operations.withdrawal(account, extra, key)
                        if extra % 2
                        else operations.deposit(account, extra, key)
                    ],
                    self.now,
                ),
            ),
            "unsigned": (
                MalformedEnvelope,
                lambda: book.submit(
                    [
                        operations.transfer(account, other, extra, key)
                        if extra % 2
                        else operations.deposit(account, extra, key)
                    ]
                ),
            ),
            "user-signed deposit": (
                UnknownOperator,
                lambda: book.submit(
                    [SIGNERS[thief].sign_system(operations.deposit(account, extra, key))]
                ),
            ),
            "no operator key": (
                UnknownOperator,
                [
                    lambda: self.reader.deposit(account, extra, key=key),
                    lambda: self.reader.reverse(model.seq, reason="no key", key=key),
                    self.reader.seal,
                ][extra % 3],
            ),
        }
        if used:
            # An owner's nonce at or below its last one (used, or skipped over).
            stale_owner = owner if owner in model.nonces else used[extra % len(used)]
            last = model.nonces[stale_owner]
            command = replace(
                self.user_command("withdrawal", stale_owner, None, 1),
                nonce=1 + extra % last,
            )
            assert predicted(command) is NonceReused
            cases["used nonce"] = refused(command)
        else:
            cases["used nonce"] = cases["not onboarded"]
        shortfall = InsufficientFunds if opened else UnknownAccount
        expected_overdraft = shortfall if owner in model.onboarded else NotOnboarded
        assert cases["overdraft withdraw"][0] is expected_overdraft
        assert cases["overdraft transfer"][0] is expected_overdraft
        assert cases["not owner"][0] is NotOwner
        assert cases["not onboarded"][0] is NotOnboarded
        assert cases["unknown withdraw"][0] is UnknownAccount
        assert cases["unknown transfer"][0] is UnknownAccount
        error, action = cases[case]
        self.expect_refusal(error, action)
        assert self.book.store.transaction_by_key(key) is None
        for signer in (owner, thief, STRANGER, NEVER):
            assert self.book.store.transaction_by_key(f"{signer}/{self.next_nonce(signer)}") is None

    @rule(
        target=keys,
        items=st.lists(
            st.tuples(
                st.sampled_from(["deposit", "withdrawal", "transfer"]),
                st.sampled_from(USERS),
                st.sampled_from(USERS),
                AMOUNTS,
                PORTIONS,
                FUNDED,
            ),
            min_size=1,
            max_size=5,
        ),
        # Mostly batches of fresh items, which are written unless one of them fails.
        retry_committed=st.one_of(st.none(), st.none(), st.integers(0, 10**6)),
        repeat_in_batch=st.sampled_from([False, False, True]),
    )
    def batch(
        self,
        items: list[tuple[str, str, str, int, str, bool]],
        retry_committed: int | None,
        repeat_in_batch: bool,
    ) -> MultipleResults[str]:
        """An atomic batch: every item is written in order, or (when one fails) none. A
        committed operator event (or genesis, or an onboarding) in it is a duplicate; a
        committed or repeated user action refuses the whole batch (its nonce is used)."""
        keys: list[str] = []
        commands: list[Command] = []
        nonces = dict(self.model.nonces)  # each owner's actions take consecutive nonces
        operator_keys = 0
        for kind, chosen, other, raw, portion, funded in items:
            account = chosen if kind == "deposit" else self.source(chosen, funded)
            if other == account:
                other = USERS[(USERS.index(account) + 1) % len(USERS)]
            amount = raw if kind == "deposit" else self.debit_amount(account, raw, portion)
            if kind == "deposit":
                commands.append(Command(kind, target=account, amount=amount))
                keys.append(self.fresh_key(operator_keys))
                operator_keys += 1
                continue
            signer = owner_of(account)
            nonces[signer] = nonces.get(signer, 0) + 1
            command = Command(
                kind,
                source=account,
                target=other if kind == "transfer" else None,
                amount=amount,
                signer=signer,
                nonce=nonces[signer],
            )
            commands.append(command)
            keys.append(command.user_key)
        fresh = len(keys)
        requests = [c.request(self.book, k) for c, k in zip(commands, keys, strict=True)]
        if retry_committed is not None:
            # Any committed transaction: a money movement, genesis or an onboarding.
            old = self.model.txs[retry_committed % self.model.seq].key
            keys.insert(1, old)
            commands.insert(1, self.model.commands[old])
            requests.insert(1, self.model.commands[old].request(self.book, old))
        if repeat_in_batch:
            keys.append(keys[0])
            commands.append(commands[0])
            requests.append(requests[0])
        # Predict: first the keys (a used nonce refuses the batch before anything else),
        # then the fresh items in order on a copy of the balances and nonces.
        failure: tuple[int, type[LedgerError], bool] | None = None
        seen: set[str] = set()
        for i, (command, key) in enumerate(zip(commands, keys, strict=True)):
            if key in self.model.commands or key in seen:
                if command.user:
                    failure = (i, NonceReused, False)
                    break
                continue
            seen.add(key)
        balances = dict(self.model.balances)
        nonces = dict(self.model.nonces)
        at = self.expected_recorded_at(self.model.head_recorded_at)
        seen.clear()
        for i, (command, key) in enumerate(zip(commands, keys, strict=True)):
            if failure is not None:
                break
            if key in self.model.commands or key in seen:
                continue
            seen.add(key)
            error = self.model.refusal(command, balances, nonces, at)
            if error is not None:
                failure = (i, error, True)
                break
            for account, amount in command.legs():
                balances[account] = balances.get(account, 0) + amount
            if command.user:
                nonces[command.signer] = command.nonce
            at += 1
        if failure is not None:
            index, error, in_journal = failure
            message = self.expect_refusal(error, lambda: self.book.submit(requests))
            if in_journal and len(requests) > 1:
                assert f"transaction {index + 1} of {len(requests)} (key {keys[index]!r})" in (
                    message
                )
            elif not in_journal and keys[index] in self.model.commands:
                command = commands[index]
                assert f"nonce {command.nonce} of {command.signer} was already used" in message
            elif not in_journal:
                assert f"the action {keys[index]!r} appears twice in this batch" in message
            return multiple()
        head = self.book.store.head()
        receipts = self.book.submit(requests)
        assert len(receipts) == len(requests)
        written: list[str] = []
        for receipt, command, key in zip(receipts, commands, keys, strict=True):
            if key in self.model.commands:
                assert not command.user
                assert receipt.duplicate
                assert receipt.tx == self.model.tx(key)
                continue
            assert not receipt.duplicate
            self.commit(receipt.tx, key, command)
            written.append(key)
        assert len(written) == fresh
        assert self.book.store.head().seq == head.seq + fresh
        return multiple(*written)

    @precondition(lambda self: self.model.seq == self.model.sealed_seq and not self.idle_sealed)
    @rule()
    def seal_nothing(self) -> None:
        """Sealing with nothing new is refused (once per block: the rule is not worth more)."""
        self.expect_refusal(NothingToSeal, self.book.seal)
        self.idle_sealed = True

    @precondition(lambda self: self.model.seq > self.model.sealed_seq)
    @rule()
    def seal(self) -> None:
        model = self.model
        header = self.book.seal()
        assert header.number == model.blocks + 1
        assert (header.first_seq, header.last_seq) == (model.sealed_seq + 1, model.seq)
        assert header.tx_head_hash == model.head_hash
        assert header.sealed_at == max(self.now, model.sealed_at + 1 if model.blocks else 0)
        root, count = state_root([(a, USDC, b) for a, b in model.balances.items()])
        assert (header.state_root, header.leaf_count) == (root, count)
        for account in sorted(model.balances):
            proof = self.book.proof(account)
            assert proof.balance == model.balances[account]
            assert proof.verify()[0]
        model.sealed_seq, model.blocks, model.sealed_at = model.seq, header.number, header.sealed_at
        self.idle_sealed = False

    @precondition(lambda self: self.model.seq > 0)
    @rule(account=st.sampled_from(USERS), pick=st.integers(0, 10**6))
    def balance_at_seq(self, account: str, pick: int) -> None:
        """A past balance equals the model's balance as of that sequence."""
        seq = pick % (self.model.seq + 1)
        if account not in self.model.balances:
            with pytest.raises(NotFound):
                self.book.balance(account, at_seq=seq)
            return
        balance = self.book.balance(spelled(account, True), at_seq=seq)
        assert (balance.account, balance.seq) == (account, seq)
        assert balance.units == self.model.snapshots[seq].get(account, 0)

    # ------------------------------------------------------------------ invariants
    @invariant()
    def store_equals_model(self) -> None:
        store, model = self.book.store, self.model
        head = store.head()
        assert (head.seq, head.hash, head.recorded_at) == (
            model.seq,
            model.head_hash,
            model.head_recorded_at,
        )
        balances = store.current_balances()
        totals: dict[str, int] = {}
        for (_, asset), units in balances.items():
            totals[asset] = totals.get(asset, 0) + units
        assert all(total == 0 for total in totals.values()), totals
        assert balances == {(a, USDC): b for a, b in model.balances.items()}
        assert store.current_versions() == model.versions
        assert all(b >= 0 for a, b in model.balances.items() if not is_system(a))
        wallets = {owner: SIGNERS[owner].stark_public_key for owner in model.onboarded}
        assert store.auth_projection() == AuthState({OPERATOR.address}, wallets, model.nonces)

    @invariant()
    def journal_is_gapless_chained_and_folds_to_balances(self) -> None:
        txs = list(self.book.store.iter_transactions())
        assert txs == self.model.txs
        prev_hash, prev_at = ZERO_HASH, 0
        folded: dict[str, int] = {}
        versions: dict[str, int] = {}
        for seq, tx in enumerate(txs, start=1):
            assert tx.seq == seq
            assert tx.prev_hash == prev_hash
            assert tx.recorded_at > prev_at
            assert chain_hash(prev_hash, tx.encode()) == tx.hash
            assert sum(p.amount for p in tx.postings) == 0
            for p in tx.postings:
                folded[p.account] = folded.get(p.account, 0) + p.amount
                versions[p.account] = versions.get(p.account, 0) + 1
                assert (p.balance_after, p.version) == (folded[p.account], versions[p.account])
            prev_hash, prev_at = tx.hash, tx.recorded_at
        assert folded == self.model.balances
        assert {tx.key for tx in txs} == set(self.model.commands)
        assert len(list(self.book.store.iter_blocks())) == self.model.blocks

    @invariant()
    def statements_fold_to_balances(self) -> None:
        for account in (*USERS, BRIDGE, NEVER):
            if account not in self.model.balances:
                with pytest.raises(NotFound):
                    self.book.history(account)
                continue
            running = 0
            lines = self.book.history(account)
            for line in lines:
                running += line.amount
                assert line.balance_after == running
            assert running == self.model.balances[account]
            assert len(lines) == self.model.versions[account]
            assert self.book.balance(account).units == running

    @invariant()
    def audit_passes(self) -> None:
        """Every fifth transaction (the audit re-verifies every signature, so not after
        steps that wrote nothing); teardown audits the final state."""
        if self.model.seq % 5 == 0 and self.model.seq != self.audited_seq:
            report = self.book.audit()
            assert report.ok, report.to_json()
            assert report.transactions == self.model.seq
            self.audited_seq = self.model.seq


def _run(store: str, examples: int, steps: int) -> None:
    machine = type(f"LedgerMachine_{store}", (LedgerMachine,), {"store_name": store})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            derandomize=True,
            database=None,
            report_multiple_bugs=False,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


@pytest.mark.parametrize("store", STORES)
def test_ledger_state_machine(store: str) -> None:
    _run(store, EXAMPLES[store], STEPS)


def test_reverse_retry_with_same_key_returns_the_original_receipt(book: Ledger) -> None:
    """README: "the same key with the same payload returns the original receipt and writes
    nothing"; `ledger reverse --key` says the same ("a retry with it writes nothing"). A
    client that retries a reversal after a timeout must get its receipt, not an error."""
    book.deposit(ALICE, "10", key="dep")
    deposit = book.store.head().seq
    first = book.reverse(deposit, reason="wrong amount", key="rev-1")
    again = book.reverse(deposit, reason="wrong amount", key="rev-1")
    assert again.duplicate
    assert (again.seq, again.hash) == (first.seq, first.hash)
    assert book.store.head().seq == deposit + 1
