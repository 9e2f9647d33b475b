"""Journal transactions and the pure state machine that appends them.

Records are NamedTuples: immutable, typed, and several times cheaper to build than frozen
dataclasses on the hot path (tens of thousands per second).

:class:`Journal` holds the chain head and an overlay of the balances and account
versions a batch touches. :meth:`Journal.apply` validates one request against it and
returns the committed record, or raises without changing anything. The store loads
the overlay, applies a batch, and writes the records; it never decides anything itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import NamedTuple, Protocol

from ledger.core.accounts import MIRROR_PREFIX, STARKNET, is_system, normalize_account
from ledger.core.amounts import MAX_AMOUNT, MIRROR_ASSET, USDC, Asset, format_amount
from ledger.core.authorization import Auth, AuthState, authorize, commit, debited_accounts
from ledger.core.encoding import (
    ZERO_HASH,
    canonical_json,
    chain_hash,
    encode_request,
    encode_tx,
    sha256,
)
from ledger.errors import (
    InsufficientFunds,
    InvalidAmount,
    LimitExceeded,
    UnbalancedTransaction,
    UnknownAccount,
)

MAX_POSTINGS_PER_TX = 64
# As TigerBeetle: large enough to amortise a commit, small enough to bound memory.
MAX_BATCH = 8190
MAX_KEY_BYTES = 128


class TxKind(StrEnum):
    """What a transaction records. Later features add their kinds here."""

    DEPOSIT = "deposit"
    WITHDRAWAL = "withdrawal"
    TRANSFER = "transfer"
    REVERSAL = "reversal"
    FILL = "fill"
    FUNDING = "funding"
    SETTLEMENT = "settlement"
    LIQUIDATION = "liquidation"
    PRICE_UPDATE = "price_update"
    ONBOARDING = "onboarding"
    OPERATOR_KEYS = "operator_keys"
    ACCOUNT_SETTING = "account_setting"
    LISTING = "listing"
    PAYOUT = "payout"
    MIRROR = "mirror"


KNOWN_KINDS = frozenset(kind.value for kind in TxKind)
# Kinds whose postings the ledger's rules compute from the request's metadata and its state
# (a fill names the orders, price and size; the ledger works out premiums, fees, PnL).
DERIVED_KINDS = frozenset(
    {
        TxKind.FILL.value,
        TxKind.FUNDING.value,
        TxKind.SETTLEMENT.value,
        TxKind.LIQUIDATION.value,
        TxKind.PRICE_UPDATE.value,
        TxKind.LISTING.value,
    }
)


class Posting(NamedTuple):
    """One requested leg: a signed amount in base units on an account."""

    account: str
    asset: str
    amount: int


class TxRequest(NamedTuple):
    """A transaction as a client asks for it, before it has a sequence number."""

    kind: str
    key: str
    postings: tuple[Posting, ...]
    metadata: str = "{}"
    effective_at: int | None = None
    reverses: int | None = None
    # Who signed it, derived from the signature in ``metadata`` (not part of the digest).
    auth: Auth | None = None

    def digest(self) -> bytes:
        """SHA-256 of the canonical request; equal digests mean an idempotent retry."""
        return sha256(
            encode_request(
                self.kind,
                self.key,
                self.postings,  # a Posting is the (account, asset, amount) tuple
                self.metadata,
                self.effective_at,
                self.reverses,
            )
        ).digest()


class PostingRecord(NamedTuple):
    """A committed leg with the account's balance after it and the account's version."""

    account: str
    asset: str
    amount: int
    balance_after: int
    version: int


class TxRecord(NamedTuple):
    """A committed, hash-chained transaction."""

    seq: int
    kind: str
    key: str
    effective_at: int
    recorded_at: int
    metadata: str
    reverses: int | None
    postings: tuple[PostingRecord, ...]
    digest: bytes
    prev_hash: bytes
    hash: bytes

    def encode(self) -> bytes:
        """Canonical encoding, the input of the hash chain."""
        return encode_tx(
            self.seq,
            self.kind,
            self.key,
            self.effective_at,
            self.recorded_at,
            self.metadata,
            self.reverses,
            self.postings,  # a PostingRecord is the tuple encode_tx expects
        )


class ChainHead(NamedTuple):
    """The last committed transaction: where the next one chains on."""

    seq: int = 0
    hash: bytes = ZERO_HASH
    recorded_at: int = 0


@lru_cache(maxsize=1 << 16)
def canonical_account(account: str) -> str:
    """Cached :func:`normalize_account` (hot accounts are validated once)."""
    return normalize_account(account)


def make_request(
    kind: str,
    key: str,
    postings: list[Posting] | tuple[Posting, ...],
    metadata: Mapping[str, object] | None = None,
    effective_at: int | None = None,
    reverses: int | None = None,
) -> TxRequest:
    """Build a request with canonical account ids, metadata and checked limits."""
    if kind not in KNOWN_KINDS:
        raise UnbalancedTransaction(f"unknown transaction kind {kind!r}")
    if not key or len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise LimitExceeded(f"idempotency key must be 1..{MAX_KEY_BYTES} bytes, got {key!r}")
    if len(postings) > MAX_POSTINGS_PER_TX:
        raise LimitExceeded(
            f"a transaction has at most {MAX_POSTINGS_PER_TX} postings, got {len(postings)}"
        )
    legs = tuple(
        p
        if canonical_account(p.account) == p.account
        else Posting(canonical_account(p.account), p.asset, p.amount)
        for p in postings
    )
    return TxRequest(
        kind=kind,
        key=key,
        postings=legs,
        metadata=canonical_json(metadata or {}),
        effective_at=effective_at,
        reverses=reverses,
    )


class Transition(Protocol):
    """What the ledger's rules make of one request: the postings to apply, a check of the
    state they lead to, and the commit of the rules' own state once the journal accepts."""

    postings: tuple[Posting, ...]

    def check(self, after: Mapping[tuple[str, str], int]) -> None:
        """Raise unless the balances after the postings (``after``: the changed ones) are
        allowed, e.g. every account that initiated the transition still meets its margin."""

    def commit(self, legs: Sequence[PostingRecord]) -> None:
        """Record the transition in the rules' state (called once, after validation)."""


class Rules(Protocol):
    """The business rules every transaction passes through (trading and margin)."""

    @property
    def assets(self) -> Mapping[str, Asset]:
        """Every asset a posting may use."""

    def transition(
        self,
        request: TxRequest,
        balances: Mapping[tuple[str, str], int],
        auth_state: AuthState,
        now_us: int,
    ) -> Transition | None:
        """Plan ``request`` against the state before it, or None when the rules have
        nothing to add (the request's own postings apply unchecked)."""


def check_mirror_postings(kind: str, postings: Iterable[Posting]) -> None:
    """Mirrored L2 balances are evidence (``ledger.core.mirror``): only mirror entries post
    ``L2USDC`` or touch ``mirror:`` accounts, and they post nothing else."""
    is_mirror = kind == TxKind.MIRROR.value
    for p in postings:
        evidence = p.asset == MIRROR_ASSET.code
        mirrored = p.account == STARKNET or p.account.startswith(MIRROR_PREFIX)
        if is_mirror and not (evidence and mirrored):
            raise UnbalancedTransaction(
                f"a mirror entry posts only {MIRROR_ASSET.code} between {STARKNET} and "
                f"mirror accounts, not {p.asset} to {p.account}"
            )
        if not is_mirror and (evidence or mirrored):
            raise UnbalancedTransaction(
                f"a {kind} cannot post {p.asset} to {p.account}: mirrored L2 balances are "
                "evidence, written only by the mirror"
            )


@dataclass(slots=True)
class Journal:
    """Chain head plus an overlay of balances and versions; applies requests in order."""

    head: ChainHead
    balances: dict[tuple[str, str], int]
    versions: dict[str, int]
    auth_state: AuthState = field(default_factory=AuthState)
    assets: Mapping[str, Asset] = field(
        default_factory=lambda: {USDC.code: USDC, MIRROR_ASSET.code: MIRROR_ASSET}
    )
    rules: Rules | None = None

    def apply(self, request: TxRequest, digest: bytes, now_us: int) -> TxRecord:
        """Validate ``request`` against the overlay and append it; all or nothing."""
        balances, versions = self.balances, self.versions
        head = self.head
        seq = head.seq + 1
        recorded_at = max(now_us, head.recorded_at + 1)
        if request.kind in DERIVED_KINDS and request.postings:
            raise UnbalancedTransaction(
                f"a {request.kind} names no postings: the ledger computes them"
            )
        self._check(request.postings)
        check_mirror_postings(request.kind, request.postings)
        debited = debited_accounts(request.postings)
        authorize(request.kind, request.key, request.auth, debited, self.auth_state, recorded_at)
        transition = None
        postings = request.postings
        if self.rules is not None:
            transition = self.rules.transition(request, balances, self.auth_state, recorded_at)
            if transition is not None and transition.postings is not postings:
                postings = transition.postings
                self._check(postings)
                check_mirror_postings(request.kind, postings)
        legs: list[PostingRecord] = []
        # _check guarantees each account appears at most once per asset; an account may
        # still carry several assets, so versions count per account across the legs.
        new_versions: dict[str, int] = {}
        for p in postings:
            account, amount = p.account, p.amount
            before = balances.get((account, p.asset), 0)
            after = before + amount
            if not is_system(account):
                if amount < 0 and account not in versions and not self.assets[p.asset].signed:
                    raise UnknownAccount(f"unknown account {account}: it has never received funds")
                if after < 0 and not self.assets[p.asset].signed:
                    asset = self.assets[p.asset]
                    raise InsufficientFunds(
                        f"insufficient funds: account {account} has "
                        f"{format_amount(before, asset)} {asset.code}, needs "
                        f"{format_amount(-amount, asset)}"
                    )
            if after > MAX_AMOUNT or after < -MAX_AMOUNT:
                raise LimitExceeded(f"balance of {account} would exceed the 64-bit limit")
            version = new_versions.get(account) or versions.get(account, 0)
            new_versions[account] = version + 1
            legs.append(PostingRecord(account, p.asset, amount, after, version + 1))
        if transition is not None:
            transition.check({(leg.account, leg.asset): leg.balance_after for leg in legs})
        # Validation is over: mutate the overlay only now, so a failure leaves it untouched.
        for leg in legs:
            balances[(leg.account, leg.asset)] = leg.balance_after
        versions.update(new_versions)
        assert request.auth is not None  # authorize() refused unsigned requests
        commit(request.kind, request.auth, self.auth_state)
        if transition is not None:
            transition.commit(legs)
        effective_at = request.effective_at if request.effective_at is not None else recorded_at
        encoded = encode_tx(
            seq,
            request.kind,
            request.key,
            effective_at,
            recorded_at,
            request.metadata,
            request.reverses,
            legs,
        )
        tx_hash = chain_hash(head.hash, encoded)
        record = TxRecord(
            seq=seq,
            kind=request.kind,
            key=request.key,
            effective_at=effective_at,
            recorded_at=recorded_at,
            metadata=request.metadata,
            reverses=request.reverses,
            postings=tuple(legs),
            digest=digest,
            prev_hash=head.hash,
            hash=tx_hash,
        )
        self.head = ChainHead(seq, tx_hash, recorded_at)
        return record

    def _check(self, postings: Sequence[Posting]) -> None:
        sums: dict[str, int] = {}
        seen: set[tuple[str, str]] = set()
        for p in postings:
            if p.asset not in self.assets:
                raise UnbalancedTransaction(f"unknown asset {p.asset!r}")
            if type(p.amount) is not int or p.amount == 0 or abs(p.amount) > MAX_AMOUNT:
                raise InvalidAmount(
                    f"posting amount must be a non-zero integer within 64 bits, got {p.amount!r}"
                )
            leg = (p.account, p.asset)
            if leg in seen:
                raise UnbalancedTransaction(
                    f"account {p.account} appears twice for {p.asset}; merge the postings"
                )
            seen.add(leg)
            sums[p.asset] = sums.get(p.asset, 0) + p.amount
        unbalanced = {asset: total for asset, total in sums.items() if total != 0}
        if unbalanced:
            raise UnbalancedTransaction(f"postings do not sum to zero: {unbalanced}")
