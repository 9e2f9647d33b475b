"""Account ids.

* a user's main account is its owner address: ``0x`` + 40 hex digits, stored lower-case
  (a mixed-case address must carry a valid EIP-55 checksum);
* a sub-account is ``OWNER:NAME`` (isolated margin lives there);
* system accounts are ``system:NAME`` from a fixed set; they may go negative;
* a mirror account ``mirror:OWNER`` holds the owner's StarkNet USDC as the balance mirror
  observed it (``ledger.core.mirror``): written only by the mirror.
"""

from __future__ import annotations

import re
from enum import StrEnum

from Crypto.Hash import keccak

from ledger.errors import InvalidAccount

BRIDGE = "system:bridge"
FEES = "system:fees"
INSURANCE = "system:insurance"
FUNDING = "system:funding"
# Counterparty of realised perp PnL: its USDC balance is minus the sum of open perp costs,
# i.e. exactly the unrealised PnL still owed to open positions (an audited invariant).
CLEARING = "system:clearing"
# Withdrawals signed but not yet paid out on L1: a withdrawal moves USDC here, the payout
# observed on chain moves it on to the bridge (two phases, each a journal transaction).
WITHDRAWALS = "system:withdrawals"
# Counterparty of mirrored L2 balances: minus everything the mirror holds as evidence.
STARKNET = "system:starknet"
SYSTEM_ACCOUNTS = frozenset({BRIDGE, FEES, INSURANCE, FUNDING, CLEARING, WITHDRAWALS, STARKNET})
MIRROR_PREFIX = "mirror:"

MAX_ACCOUNT_ID_BYTES = 96

_ADDRESS = re.compile(r"^0[xX](?P<hex>[0-9a-fA-F]{40})$")
_SUB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")


class AccountKind(StrEnum):
    """What an account id denotes."""

    USER = "user"
    SUB = "sub"
    SYSTEM = "system"
    MIRROR = "mirror"


def _keccak_hex(data: bytes) -> str:
    return keccak.new(digest_bits=256, data=data).hexdigest()


def to_checksum_address(address: str) -> str:
    """EIP-55 mixed-case form of a 40-hex-digit address (with ``0x``)."""
    lower = address[2:].lower()
    digest = _keccak_hex(lower.encode("ascii"))
    return "0x" + "".join(
        c.upper() if c.isalpha() and int(digest[i], 16) >= 8 else c for i, c in enumerate(lower)
    )


def normalize_address(text: str) -> str:
    """Validate an Ethereum address and return it lower-case."""
    match = _ADDRESS.match(text)
    if match is None:
        raise InvalidAccount(f"invalid address {text!r}: expected 0x followed by 40 hex digits")
    digits = match.group("hex")
    is_mixed = digits != digits.lower() and digits != digits.upper()
    if is_mixed and to_checksum_address("0x" + digits) != "0x" + digits:
        raise InvalidAccount(
            f"invalid address {text!r}: the EIP-55 checksum does not match; "
            "check for a typo or give it all lower-case"
        )
    return "0x" + digits.lower()


def normalize_account(text: str) -> str:
    """Validate any account id and return its canonical stored form."""
    if not isinstance(text, str):
        raise InvalidAccount(f"account id must be a string, got {type(text).__name__}")
    if text.startswith("system:"):
        if text not in SYSTEM_ACCOUNTS:
            known = ", ".join(sorted(SYSTEM_ACCOUNTS))
            raise InvalidAccount(f"unknown system account {text!r}; known: {known}")
        return text
    if text.startswith(MIRROR_PREFIX):
        return mirror_account(normalize_address(text.removeprefix(MIRROR_PREFIX)))
    owner, sep, name = text.partition(":")
    address = normalize_address(owner)
    if not sep:
        return address
    if _SUB_NAME.match(name) is None:
        raise InvalidAccount(
            f"invalid sub-account name {name!r} in {text!r}: use 1-32 letters, digits, "
            "'_', '.', '-', starting with a letter or digit"
        )
    return f"{address}:{name}"


def account_kind(account: str) -> AccountKind:
    """Kind of an already-normalised account id."""
    if account.startswith("system:"):
        return AccountKind.SYSTEM
    if account.startswith(MIRROR_PREFIX):
        return AccountKind.MIRROR
    return AccountKind.SUB if ":" in account else AccountKind.USER


def is_system(account: str) -> bool:
    """True for ``system:*`` accounts, which may hold negative balances."""
    return account.startswith("system:")


def owner_of(account: str) -> str:
    """The owner address of a user, sub- or mirror account."""
    assert not is_system(account), account
    return account.removeprefix(MIRROR_PREFIX).partition(":")[0]


def mirror_account(owner: str) -> str:
    """The account holding ``owner``'s mirrored L2 balance."""
    return MIRROR_PREFIX + owner
