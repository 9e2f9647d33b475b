"""Who may write what: the authorisation rules every transaction passes, on submission and
again on replay.

Every transaction carries an :class:`Auth` derived from a verified signature:

* ``user``: a SNIP-12 action signed by the L2 key an owner onboarded (withdrawals,
  transfers, account settings). The signer must own every user account the transaction
  debits, its nonce must be above the owner's last one, and it must not have expired.
* ``operator``: an EIP-712 system event signed by a registered operator key (deposits,
  reversals, market data, fills, funding, settlement, liquidation, operator-key changes).
* ``onboarding``: an owner binding its L1 address to an L2 key (signed by both keys).

The signatures themselves are checked before this (``ledger.core.envelopes``); this module
checks them against the ledger's state, so it needs no cryptography.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from ledger.core.accounts import is_system, owner_of
from ledger.errors import (
    ActionExpired,
    AlreadyOnboarded,
    AuthorizationError,
    NonceReused,
    NotOnboarded,
    NotOwner,
    UnknownOperator,
)

USER = "user"
OPERATOR = "operator"
ONBOARDING = "onboarding"

USER_KINDS = frozenset({"withdrawal", "transfer", "account_setting"})
ONBOARDING_KINDS = frozenset({"onboarding"})
MAX_NONCE = 2**63 - 1


class Auth(NamedTuple):
    """The verified signer of a transaction and what it signed for."""

    scheme: str
    signer: str  # lower-case L1 address: the owner, or the operator
    nonce: int = 0
    expiry: int = 0  # unix seconds
    stark_key: int = 0
    subject: str = ""  # the account acted on (user), or the operator key added


@dataclass(slots=True)
class AuthState:
    """The part of the ledger's state authorisation depends on (a per-batch overlay)."""

    operators: set[str] = field(default_factory=set)
    wallets: dict[str, int] = field(default_factory=dict)  # owner -> stark public key
    nonces: dict[str, int] = field(default_factory=dict)  # owner -> last nonce


def scheme_for(kind: str) -> str:
    """Which signature scheme authorises transactions of ``kind``."""
    if kind in USER_KINDS:
        return USER
    if kind in ONBOARDING_KINDS:
        return ONBOARDING
    return OPERATOR


_RESERVED_KEY = re.compile(r"^(0x[0-9a-f]{40}/[0-9]+|onboard/.*)$")


def expected_key(auth: Auth) -> str | None:
    """The idempotency key a user action or onboarding must have (None: operator's choice)."""
    if auth.scheme == USER:
        return f"{auth.signer}/{auth.nonce}"
    if auth.scheme == ONBOARDING:
        return f"onboard/{auth.signer}"
    return None


def authorize(
    kind: str,
    key: str,
    auth: Auth | None,
    debited: list[str],
    state: AuthState,
    recorded_at_us: int,
) -> None:
    """Raise unless ``auth`` may write a ``kind`` transaction with idempotency key ``key``
    debiting ``debited``."""
    if auth is None:
        raise AuthorizationError(f"unsigned {kind} transaction: every transaction must be signed")
    expected = scheme_for(kind)
    if auth.scheme != expected:
        raise AuthorizationError(f"a {kind} must carry a {expected} signature, not {auth.scheme}")
    wanted = expected_key(auth)
    if wanted is not None and key != wanted:
        raise AuthorizationError(f"a {kind} by {auth.signer} must have the key {wanted!r}")
    if wanted is None and _RESERVED_KEY.match(key):
        # Keys of the form OWNER/NONCE and onboard/OWNER belong to the owner's own actions.
        raise AuthorizationError(f"key {key!r} is reserved for an owner's signed actions")
    if expected == OPERATOR:
        _authorize_operator(kind, auth, state)
    elif expected == ONBOARDING:
        known = state.wallets.get(auth.signer)
        if known is not None:
            raise AlreadyOnboarded(f"{auth.signer} is already onboarded with L2 key {known:#x}")
    else:
        _authorize_user(auth, debited, state, recorded_at_us)


def _authorize_operator(kind: str, auth: Auth, state: AuthState) -> None:
    if kind == "operator_keys" and not state.operators:
        if auth.signer != auth.subject:
            raise UnknownOperator("the first operator key must sign its own registration")
        return
    if auth.signer not in state.operators:
        raise UnknownOperator(f"{auth.signer} is not a registered operator key")


def _authorize_user(auth: Auth, debited: list[str], state: AuthState, now_us: int) -> None:
    onboarded = state.wallets.get(auth.signer)
    if onboarded is None:
        raise NotOnboarded(f"account {auth.signer} is not onboarded: run `ledger onboard` first")
    if onboarded != auth.stark_key:
        raise NotOnboarded(
            f"{auth.signer} onboarded L2 key {onboarded:#x}, but the action is signed by "
            f"{auth.stark_key:#x}"
        )
    for account in [*debited, *([auth.subject] if auth.subject else [])]:
        if is_system(account):
            raise NotOwner(f"{account} is a system account: no user action can move its funds")
        if owner_of(account) != auth.signer:
            raise NotOwner(f"{auth.signer} cannot move funds of {account}: it does not own it")
    last = state.nonces.get(auth.signer, 0)
    if auth.nonce <= last:
        raise NonceReused(
            f"nonce {auth.nonce} of {auth.signer} is used or too old: it must exceed {last}"
        )
    if auth.expiry * 1_000_000 < now_us:
        raise ActionExpired(f"the action expired at {auth.expiry} (unix seconds)")


def commit(kind: str, auth: Auth, state: AuthState) -> None:
    """Record what an authorised transaction changes in the authorisation state."""
    if kind == "operator_keys":
        state.operators.add(auth.subject)
    elif auth.scheme == ONBOARDING:
        state.wallets[auth.signer] = auth.stark_key
    elif auth.scheme == USER:
        state.nonces[auth.signer] = auth.nonce


def debited_accounts(postings: Iterable[tuple[str, str, int]]) -> list[str]:
    """User accounts a transaction takes funds from."""
    return [account for account, _, amount in postings if amount < 0 and not is_system(account)]
