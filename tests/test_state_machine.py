"""A Hypothesis state machine drives the ledger against an in-memory model, on each store.

Every example gets a fresh database. The rules make deposits, withdrawals, transfers and
reversals among four user addresses and a sub-account, retry with the same key (the
original receipt comes back and nothing is written), reuse a key for a different payload
(refused), send commands that must fail (overdraft, unknown source, same account, bad
amounts) and atomic batches that may hold a failing or conflicting item, move the clock
backwards and forwards, and seal blocks. After every step the store must equal the model
exactly: the journal rows, balances, versions, statements, key map, chain and blocks.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

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

from ledger import Ledger, Receipt, TxRecord, TxRequest
from ledger.core import operations
from ledger.core.accounts import BRIDGE, is_system, to_checksum_address
from ledger.core.amounts import format_amount
from ledger.core.blocks import state_root
from ledger.core.encoding import ZERO_HASH, chain_hash
from ledger.errors import (
    AlreadyReversed,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidAmount,
    LedgerError,
    NotFound,
    NothingToSeal,
    SameAccount,
    UnknownAccount,
)
from tests.conftest import (
    ALICE,
    BOB,
    CAROL,
    STORES,
    drop_postgres_database,
    new_postgres_database,
)

DAVE = "0x" + "d4" * 20
ISO = f"{ALICE}:iso"
NEVER = "0x" + "e5" * 20  # never credited by any rule: always an unknown source
USERS = (ALICE, BOB, CAROL, DAVE, ISO)
USDC = "USDC"
START_US = 1_700_000_000_000_000

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

EXAMPLES = {"sqlite": 40, "postgresql": 12}


def spelled(account: str, checksum: bool) -> str:
    """``account`` as given, or with its owner in EIP-55 mixed case (the same account)."""
    if not checksum or is_system(account):
        return account
    owner, sep, name = account.partition(":")
    return to_checksum_address(owner) + sep + name


@dataclass(frozen=True, slots=True)
class Command:
    """A money movement the model can predict and the ledger can be asked to make."""

    kind: str  # deposit | withdrawal | transfer | reversal
    source: str | None = None
    target: str | None = None
    amount: int = 0
    original: TxRecord | None = None  # reversal: the transaction it reverses
    reason: str = ""

    def legs(self) -> list[tuple[str, int]]:
        """Postings ``(account, amount)`` in the order the ledger records them."""
        if self.kind == "deposit":
            assert self.target is not None
            return [(BRIDGE, -self.amount), (self.target, self.amount)]
        if self.kind == "withdrawal":
            assert self.source is not None
            return [(self.source, -self.amount), (BRIDGE, self.amount)]
        if self.kind == "transfer":
            assert self.source is not None and self.target is not None
            return [(self.source, -self.amount), (self.target, self.amount)]
        assert self.original is not None
        return [(p.account, -p.amount) for p in self.original.postings]

    def request(self, key: str) -> TxRequest:
        if self.kind == "deposit":
            assert self.target is not None
            return operations.deposit(self.target, self.amount, key)
        if self.kind == "withdrawal":
            assert self.source is not None
            return operations.withdrawal(self.source, self.amount, key)
        if self.kind == "transfer":
            assert self.source is not None and self.target is not None
            return operations.transfer(self.source, self.target, self.amount, key)
        assert self.original is not None
        return operations.reversal(self.original, key, self.reason)

    def call(self, book: Ledger, key: str | None, *, checksum: bool, as_str: bool) -> Receipt:
        """Through the public single-command API, spelled and typed as asked."""
        amount: int | str = format_amount(self.amount) if as_str else self.amount
        if self.kind == "deposit":
            assert self.target is not None
            return book.deposit(spelled(self.target, checksum), amount, key=key)
        if self.kind == "withdrawal":
            assert self.source is not None
            return book.withdraw(spelled(self.source, checksum), amount, key=key)
        if self.kind == "transfer":
            assert self.source is not None and self.target is not None
            return book.transfer(
                spelled(self.source, checksum), spelled(self.target, not checksum), amount, key=key
            )
        assert self.original is not None
        return book.reverse(self.original.seq, reason=self.reason, key=key)


@dataclass(slots=True)
class Model:
    """What the ledger must hold: balances, versions, the journal and the key map."""

    balances: dict[str, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    txs: list[TxRecord] = field(default_factory=list)
    commands: dict[str, Command] = field(default_factory=dict)  # key -> command
    reversed: set[int] = field(default_factory=set)
    snapshots: list[dict[str, int]] = field(default_factory=lambda: [{}])  # balances per seq
    sealed_seq: int = 0
    blocks: int = 0
    sealed_at: int = 0

    @property
    def seq(self) -> int:
        return len(self.txs)

    @property
    def head_hash(self) -> bytes:
        return self.txs[-1].hash if self.txs else ZERO_HASH

    @property
    def head_recorded_at(self) -> int:
        return self.txs[-1].recorded_at if self.txs else 0

    def refusal(
        self, legs: Sequence[tuple[str, int]], balances: dict[str, int]
    ) -> type[LedgerError] | None:
        """The error the journal raises for ``legs`` against ``balances``, or None."""
        for account, amount in legs:
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
            self.book = Ledger.init(self.url, clock=self.clock)
        else:
            self.url = new_postgres_database()
            self.book = Ledger(self.url, clock=self.clock)
        self.model = Model()
        self.key_counter = 0
        self.idle_sealed = False

    def clock(self) -> int:
        return self.now

    def teardown(self) -> None:
        try:
            if self.model.seq:
                assert self.book.audit().ok
        finally:
            self.book.close()
            if self.tmpdir is not None:
                shutil.rmtree(self.tmpdir, ignore_errors=True)
            else:
                drop_postgres_database(self.url)

    # ------------------------------------------------------------------ helpers
    def fresh_key(self, offset: int = 0) -> str:
        """The next unused key. Failed writes do not consume it: the next write reuses it,
        which proves a refused command left no trace of its key."""
        return f"key-{self.key_counter + offset}"

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
        self, command: Command, keyed: bool, checksum: bool, as_str: bool
    ) -> str | MultipleResults[str]:
        key = self.fresh_key() if keyed else None
        error = self.model.refusal(command.legs(), self.model.balances)
        if command.kind == "transfer" and command.source == command.target:
            error = SameAccount
        if error is not None:
            self.expect_refusal(
                error, lambda: command.call(self.book, key, checksum=checksum, as_str=as_str)
            )
            return multiple()
        receipt = command.call(self.book, key, checksum=checksum, as_str=as_str)
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
        keyed=st.booleans(),
        checksum=st.booleans(),
        as_str=st.booleans(),
    )
    def withdraw(
        self,
        account: str,
        raw: int,
        portion: str,
        funded: bool,
        keyed: bool,
        checksum: bool,
        as_str: bool,
    ) -> str | MultipleResults[str]:
        account = self.source(account, funded)
        amount = self.debit_amount(account, raw, portion)
        command = Command("withdrawal", source=account, amount=amount)
        return self.single(command, keyed, checksum, as_str)

    @rule(
        target=keys,
        source=st.sampled_from(USERS),
        target_account=st.sampled_from(USERS),
        raw=AMOUNTS,
        portion=PORTIONS,
        funded=FUNDED,
        keyed=st.booleans(),
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
        keyed: bool,
        checksum: bool,
        as_str: bool,
    ) -> str | MultipleResults[str]:
        source = self.source(source, funded)
        amount = self.debit_amount(source, raw, portion)
        command = Command("transfer", source=source, target=target_account, amount=amount)
        return self.single(command, keyed, checksum, as_str)

    @precondition(lambda self: self.model.seq > 0)
    @rule(target=keys, pick=st.integers(0, 10**6), keyed=st.booleans())
    def reverse(self, pick: int, keyed: bool) -> str | MultipleResults[str]:
        original = self.model.txs[pick % self.model.seq]
        command = Command("reversal", original=original, reason=f"undo {original.seq}")
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
        """The same key and payload returns the original receipt and writes nothing, even
        when the command would be refused now (the funds have moved on since)."""
        command = self.model.commands[key]
        original = next(tx for tx in self.model.txs if tx.key == key)
        head = self.book.store.head()
        if via == "api":
            receipt = command.call(self.book, key, checksum=checksum, as_str=checksum)
        elif via == "submit" or self.model.seq < 2:
            (receipt,) = self.book.submit([command.request(key)])
        else:
            # A batch of two committed keys (this one and the first): both duplicates.
            other = self.model.txs[0].key
            receipts = self.book.submit(
                [command.request(key), self.model.commands[other].request(other)]
            )
            assert receipts[1].duplicate and receipts[1].tx == self.model.txs[0]
            receipt = receipts[0]
        assert receipt.duplicate
        assert (receipt.seq, receipt.hash) == (original.seq, original.hash)
        assert receipt.tx == original
        assert self.book.store.head() == head

    @rule(
        key=keys,
        change=st.sampled_from(["amount", "kind"]),
        via=st.sampled_from(["api", "submit", "batch"]),
    )
    def retry_different_payload(self, key: str, change: str, via: str) -> None:
        """The same key with a different payload (amount, kind, or a reversal's reason) is
        refused and writes nothing, also when the batch holds a valid new item."""
        command = self.model.commands[key]
        if command.kind == "reversal":
            changed = replace(command, reason=command.reason + "!")
        elif change == "kind" and command.kind in ("deposit", "withdrawal"):
            account = command.target if command.kind == "deposit" else command.source
            kind = "withdrawal" if command.kind == "deposit" else "deposit"
            changed = Command(kind, source=account, target=account, amount=command.amount)
        else:
            changed = replace(command, amount=command.amount + 1)
        # A valid fresh deposit first in the batch: the conflict refuses the whole batch.
        fresh = Command("deposit", target=BOB, amount=1).request(self.fresh_key())
        actions: dict[str, Callable[[], object]] = {
            "api": lambda: changed.call(self.book, key, checksum=False, as_str=False),
            "submit": lambda: self.book.submit([changed.request(key)]),
            "batch": lambda: self.book.submit([fresh, changed.request(key)]),
        }
        message = self.expect_refusal(IdempotencyConflict, actions[via])
        assert repr(key) in message

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
        """Commands that must fail, each with a fresh key: nothing is written and the key
        stays unused (the next successful write takes it)."""
        book, key = self.book, self.fresh_key()
        balance = self.model.balances.get(account, 0)
        if other == account:
            other = USERS[(USERS.index(account) + 1) % len(USERS)]
        overdraft = balance + extra
        opened = account in self.model.balances
        decimal_text = f"{extra % 1000}." + str(extra).rjust(decimals, "1")[-decimals:]
        cases: dict[str, tuple[type[LedgerError], Callable[[], object]]] = {
            "overdraft withdraw": (
                InsufficientFunds if opened else UnknownAccount,
                lambda: book.withdraw(account, overdraft, key=key),
            ),
            "overdraft transfer": (
                InsufficientFunds if opened else UnknownAccount,
                lambda: book.transfer(account, other, overdraft, key=key),
            ),
            "unknown withdraw": (UnknownAccount, lambda: book.withdraw(NEVER, extra, key=key)),
            "unknown transfer": (
                UnknownAccount,
                lambda: book.transfer(spelled(NEVER, True), account, extra, key=key),
            ),
            "same account": (
                SameAccount,
                lambda: book.transfer(account, spelled(account, True), extra, key=key),
            ),
            "too many decimals": (
                InvalidAmount,
                lambda: book.deposit(account, decimal_text, key=key),
            ),
            "zero": (InvalidAmount, lambda: book.deposit(account, 0, key=key)),
            "zero decimal": (InvalidAmount, lambda: book.withdraw(account, "0.000000", key=key)),
            "zero transfer": (InvalidAmount, lambda: book.transfer(account, other, "0", key=key)),
            "negative": (InvalidAmount, lambda: book.deposit(account, -extra, key=key)),
        }
        error, action = cases[case]
        self.expect_refusal(error, action)
        assert self.book.store.transaction_by_key(key) is None

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
        retry_committed=st.booleans(),
        repeat_in_batch=st.booleans(),
    )
    def batch(
        self,
        items: list[tuple[str, str, str, int, str, bool]],
        retry_committed: bool,
        repeat_in_batch: bool,
    ) -> MultipleResults[str]:
        """An atomic batch: every item is written in order, or (when one fails) none."""
        keys: list[str] = []
        commands: list[Command] = []
        for kind, chosen, other, raw, portion, funded in items:
            account = chosen if kind == "deposit" else self.source(chosen, funded)
            if other == account:
                other = USERS[(USERS.index(account) + 1) % len(USERS)]
            amount = raw if kind == "deposit" else self.debit_amount(account, raw, portion)
            if kind == "deposit":
                commands.append(Command(kind, target=account, amount=amount))
            elif kind == "withdrawal":
                commands.append(Command(kind, source=account, amount=amount))
            else:
                commands.append(Command(kind, source=account, target=other, amount=amount))
            keys.append(self.fresh_key(len(keys)))
        fresh = len(keys)
        if retry_committed and self.model.txs:
            old = self.model.txs[len(items) % self.model.seq].key
            keys.insert(1, old)
            commands.insert(1, self.model.commands[old])
        if repeat_in_batch:
            keys.append(keys[0])
            commands.append(commands[0])
        requests = [c.request(k) for c, k in zip(commands, keys, strict=True)]
        # Predict: fresh items apply in order on a copy of the balances.
        balances = dict(self.model.balances)
        failure: tuple[int, type[LedgerError]] | None = None
        seen: set[str] = set()
        for i, (command, key) in enumerate(zip(commands, keys, strict=True)):
            if key in self.model.commands or key in seen:
                continue
            seen.add(key)
            error = self.model.refusal(command.legs(), balances)
            if error is not None:
                failure = (i, error)
                break
            for account, amount in command.legs():
                balances[account] = balances.get(account, 0) + amount
        if failure is not None:
            index, error = failure
            message = self.expect_refusal(error, lambda: self.book.submit(requests))
            if len(requests) > 1:
                assert f"transaction {index + 1} of {len(requests)} (key {keys[index]!r})" in (
                    message
                )
            return multiple()
        head = self.book.store.head()
        receipts = self.book.submit(requests)
        assert len(receipts) == len(requests)
        written: list[str] = []
        for receipt, command, key in zip(receipts, commands, keys, strict=True):
            if key in self.model.commands:
                assert receipt.duplicate
                assert receipt.tx == next(tx for tx in self.model.txs if tx.key == key)
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
        if self.model.seq % 5 == 0:
            report = self.book.audit()
            assert report.ok, report.to_json()
            assert report.transactions == self.model.seq


@pytest.mark.parametrize("store", STORES)
def test_ledger_state_machine(store: str) -> None:
    machine = type(f"LedgerMachine_{store}", (LedgerMachine,), {"store_name": store})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=EXAMPLES[store],
            stateful_step_count=50,
            deadline=None,
            derandomize=True,
            database=None,
            report_multiple_bugs=False,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


def test_reverse_retry_with_same_key_returns_the_original_receipt(book: Ledger) -> None:
    """README: "the same key with the same payload returns the original receipt and writes
    nothing"; `ledger reverse --key` says the same ("a retry with it writes nothing"). A
    client that retries a reversal after a timeout must get its receipt, not an error."""
    book.deposit(ALICE, "10", key="dep")
    first = book.reverse(1, reason="wrong amount", key="rev-1")
    again = book.reverse(1, reason="wrong amount", key="rev-1")
    assert again.duplicate
    assert (again.seq, again.hash) == (first.seq, first.hash)
    assert book.store.head().seq == 2
