from __future__ import annotations

import pytest

from ledger.core.accounts import (
    AccountKind,
    account_kind,
    normalize_account,
    to_checksum_address,
)
from ledger.errors import InvalidAccount

# EIP-55's own examples.
CHECKSUMMED = [
    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
    "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
    "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
]


@pytest.mark.parametrize("address", CHECKSUMMED)
def test_checksum_vectors(address: str) -> None:
    assert to_checksum_address(address.lower()) == address
    assert normalize_account(address) == address.lower()


def test_lower_and_upper_case_need_no_checksum() -> None:
    raw = CHECKSUMMED[0][2:]
    assert normalize_account("0x" + raw.lower()) == "0x" + raw.lower()
    assert normalize_account("0x" + raw.upper()) == "0x" + raw.lower()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD", "checksum"),
        ("0x123", "40 hex digits"),
        ("0xzz" + "0" * 38, "40 hex digits"),
        ("alice", "40 hex digits"),
        ("system:treasury", "unknown system account"),
        ("0x" + "ab" * 20 + ":", "sub-account name"),
        ("0x" + "ab" * 20 + ":a b", "sub-account name"),
        ("0x" + "ab" * 20 + ":" + "x" * 33, "sub-account name"),
    ],
)
def test_rejects(text: str, reason: str) -> None:
    with pytest.raises(InvalidAccount, match=reason):
        normalize_account(text)


def test_kinds() -> None:
    owner = "0x" + "ab" * 20
    assert account_kind(normalize_account(owner)) is AccountKind.USER
    upper = "0x" + owner[2:].upper() + ":BTC-PERP"
    assert account_kind(normalize_account(upper)) is AccountKind.SUB
    assert normalize_account(owner + ":BTC-PERP") == owner + ":BTC-PERP"
    assert account_kind("system:fees") is AccountKind.SYSTEM
