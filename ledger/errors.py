"""Typed errors. Every message says what was wrong and what the user can do about it.

The CLI prints ``str(error)`` as one line and exits with ``error.exit_code``.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base class of every error the ledger raises on purpose."""

    exit_code: int = 2


class InvalidAmount(LedgerError):
    """An amount is malformed, not positive, has too many decimals or exceeds the limits."""


class InvalidAccount(LedgerError):
    """An account id is malformed (bad hex, bad checksum, unknown system account)."""


class UnknownAccount(LedgerError):
    """The account has never received funds, so it cannot send any."""


class SameAccount(LedgerError):
    """A transfer names the same account on both sides."""


class InsufficientFunds(LedgerError):
    """The transition would take a user account below zero."""


class UnbalancedTransaction(LedgerError):
    """Postings do not sum to zero per asset, or are otherwise malformed."""


class LimitExceeded(LedgerError):
    """A batch, posting list, field or balance exceeds an explicit limit."""


class IdempotencyConflict(LedgerError):
    """An idempotency key was reused with a different payload."""


class AlreadyReversed(LedgerError):
    """A transaction can be reversed once; a reversal is corrected by a new entry."""


class NotReversible(LedgerError):
    """Only money movements can be reversed (not registrations or settings)."""


class NotFound(LedgerError):
    """A transaction, block or balance that was asked for does not exist."""


class NothingToSeal(LedgerError):
    """``seal`` was called with no transactions since the last block."""


class PayoutMismatch(LedgerError):
    """An L1 payout does not match the pending withdrawal it claims to finalise."""


class InvalidProof(LedgerError):
    """A Merkle proof file is malformed (a well-formed proof that fails is not an error)."""


class StoreNotInitialised(LedgerError):
    """The database has no ledger schema yet."""


class AuthorizationError(LedgerError):
    """A signed action or event was refused before anything was written."""


class MalformedEnvelope(AuthorizationError):
    """A signed envelope is not valid JSON of the documented shape, or a field is malformed."""


class BadSignature(AuthorizationError):
    """The signature does not verify, or was made by another key."""


class MalleableSignature(AuthorizationError):
    """An ECDSA signature with a high ``s`` (its malleated twin) is refused."""


class WrongDomain(AuthorizationError):
    """The signed domain (name, version, chain id) is not this ledger's."""


class ActionExpired(AuthorizationError):
    """The action's expiry is in the past."""


class NonceReused(AuthorizationError):
    """The nonce was already used, or is not above the account's last nonce."""


class NotOnboarded(AuthorizationError):
    """The account's owner has not onboarded a wallet (or onboarded a different key)."""


class AlreadyOnboarded(AuthorizationError):
    """An owner onboards once; its L2 key is then fixed."""


class NotOwner(AuthorizationError):
    """The signer does not own the account the action moves funds from."""


class UnknownOperator(AuthorizationError):
    """A system event is not signed by a registered operator key."""


class KeystoreError(LedgerError):
    """A keystore file cannot be read, decrypted or written."""


class InvalidInstrument(LedgerError):
    """An instrument name is malformed (bad shape, bad expiry date, strike not positive)."""


class UnknownInstrument(LedgerError):
    """An instrument name is well formed but its underlying or market is not configured."""


class InvalidConfig(LedgerError):
    """A margin/instrument configuration file is malformed (unknown, missing or bad keys)."""


class InsufficientMargin(LedgerError):
    """An account-initiated transition would leave the account under its initial margin."""


class InvalidMarketEvent(LedgerError):
    """A price, volatility, settlement or fill value is malformed or out of range."""


class MarketDataMissing(LedgerError):
    """A decision needs a price or volatility that has not been published yet."""


class InstrumentClosed(LedgerError):
    """The instrument has expired or settled: it no longer trades."""


class NotLiquidatable(LedgerError):
    """A liquidation was requested for an account that meets its maintenance margin."""


class InvalidMarginMode(LedgerError):
    """A margin mode or leverage the account cannot take."""


class MirrorError(LedgerError):
    """The StarkNet mirror cannot proceed: a node answer it cannot trust, a chain or token
    other than the one mirrored, or a reorg to review."""
