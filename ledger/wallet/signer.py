"""A wallet: one Ethereum key, and the StarkNet key ground from its signature."""

from __future__ import annotations

import time
from functools import cached_property
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount

from ledger.core import eip712, envelopes, genesis, snip12, stark
from ledger.core.amounts import USDC, parse_amount
from ledger.core.blocks import BlockHeader
from ledger.core.journal import TxRequest, canonical_account
from ledger.core.mirror import parse_address
from ledger.errors import MalformedEnvelope

DEFAULT_TTL_S = 3600


def default_nonce() -> int:
    """Milliseconds since the epoch: increasing across sessions without stored state."""
    return time.time_ns() // 1_000_000


def default_expiry(ttl_s: int = DEFAULT_TTL_S) -> int:
    return int(time.time()) + ttl_s


def nonce_or_default(nonce: int | None) -> int:
    if nonce is None:
        return default_nonce()
    if type(nonce) is not int or nonce <= 0:
        raise MalformedEnvelope(f"nonce must be a positive integer, got {nonce!r}")
    return nonce


def expiry_or_default(expiry: int | None) -> int:
    if expiry is None:
        return default_expiry()
    if type(expiry) is not int or expiry < 0:
        raise MalformedEnvelope(f"expiry must be unix seconds (>= 0), got {expiry!r}")
    return expiry


def units(amount: int | str) -> int:
    """Base units from an int, or from a decimal string (exact, checked)."""
    return parse_amount(amount, USDC) if isinstance(amount, str) else amount


class Wallet:
    """Signs for one owner: EIP-712 with the L1 key, SNIP-12 with the derived L2 key."""

    def __init__(self, private_key: bytes, l1_chain_id: int = genesis.DEFAULT_L1_CHAIN_ID) -> None:
        self._account = Account.from_key(private_key)
        self.l1_chain_id = l1_chain_id

    @property
    def address(self) -> str:
        """The L1 address, lower-case (the owner's main account id)."""
        return str(self._account.address).lower()

    @property
    def l1_account(self) -> LocalAccount:
        """The L1 key as an eth-account signer (to send transactions on L1)."""
        account: LocalAccount = self._account
        return account

    def sign_l1(self, message: dict[str, Any]) -> bytes:
        """EIP-712 signature (65 bytes, low-s) of a full typed-data message."""
        signed = Account.sign_message(encode_typed_data(full_message=message), self._account.key)
        return bytes(signed.signature)

    @cached_property
    def stark_private_key(self) -> int:
        return stark.private_key_from_l1_signature(
            self.sign_l1(eip712.stark_key_message(self.l1_chain_id))
        )

    @cached_property
    def stark_public_key(self) -> int:
        return stark.public_key(self.stark_private_key)

    @cached_property
    def stark_account(self) -> int:
        return stark.account_address(self.stark_public_key)

    def signer_json(self) -> dict[str, str]:
        return {
            "account": self.address,
            "stark_public_key": f"{self.stark_public_key:#x}",
            "stark_account": f"{self.stark_account:#x}",
        }

    # ------------------------------------------------------------------ user actions
    def sign_action(
        self, action: str, message: dict[str, Any], domain: snip12.Domain
    ) -> dict[str, Any]:
        """A signed action envelope (see ``ledger.core.envelopes``)."""
        struct = envelopes.ACTION_TYPES[action]
        try:
            digest = snip12.message_hash(domain, struct, message, self.stark_account)
        except (ValueError, UnicodeError) as exc:
            raise MalformedEnvelope(f"{action}: {exc}") from exc
        r, s = stark.sign(digest, self.stark_private_key)
        return {
            "format": envelopes.ACTION_FORMAT,
            "action": action,
            "domain": domain.to_json(),
            "message": dict(message),
            "signer": self.signer_json(),
            "signature": [f"{r:#x}", f"{s:#x}"],
        }

    def withdraw(
        self,
        account: str,
        amount: int | str,
        domain: snip12.Domain,
        nonce: int | None = None,
        expiry: int | None = None,
    ) -> dict[str, Any]:
        """Sign a withdrawal of ``amount`` USDC from ``account``."""
        return self._movement("withdraw", {"account": account}, amount, domain, nonce, expiry)

    def transfer(
        self,
        source: str,
        target: str,
        amount: int | str,
        domain: snip12.Domain,
        nonce: int | None = None,
        expiry: int | None = None,
    ) -> dict[str, Any]:
        """Sign a transfer of ``amount`` USDC from ``source`` to ``target``."""
        accounts = {"from": source, "to": target}
        return self._movement("transfer", accounts, amount, domain, nonce, expiry)

    def _movement(
        self,
        action: str,
        accounts: dict[str, str],
        amount: int | str,
        domain: snip12.Domain,
        nonce: int | None,
        expiry: int | None,
    ) -> dict[str, Any]:
        message = {name: canonical_account(account) for name, account in accounts.items()}
        message |= {
            "amount": str(units(amount)),
            "nonce": str(nonce_or_default(nonce)),
            "expiry": str(expiry_or_default(expiry)),
        }
        return self.sign_action(action, message, domain)

    def order(
        self,
        account: str,
        market: str,
        side: str,
        size: int,
        limit_price: int,
        domain: snip12.Domain,
        nonce: int | None = None,
        expiry: int | None = None,
    ) -> dict[str, Any]:
        """Sign an order: buy or sell up to ``size`` (size units) of ``market`` for
        ``account`` at ``limit_price`` (USDC base units per whole unit) or better."""
        message = {
            "account": canonical_account(account),
            "market": market,
            "side": side,
            "size": str(size),
            "limit_price": str(limit_price),
            "nonce": str(nonce_or_default(nonce)),
            "expiry": str(expiry_or_default(expiry)),
        }
        return self.sign_action("order", message, domain)

    def set_margin_mode(
        self,
        account: str,
        mode: str,
        leverage: int,
        domain: snip12.Domain,
        nonce: int | None = None,
        expiry: int | None = None,
    ) -> dict[str, Any]:
        """Sign a change of ``account``'s margin mode (cross, isolated, portfolio) and the
        leverage it uses for perps."""
        message = {
            "account": canonical_account(account),
            "mode": mode,
            "leverage": str(leverage),
            "nonce": str(nonce_or_default(nonce)),
            "expiry": str(expiry_or_default(expiry)),
        }
        return self.sign_action("set_margin_mode", message, domain)

    def mirror(
        self,
        token: int | str,
        domain: snip12.Domain,
        revoke: bool = False,
        nonce: int | None = None,
        expiry: int | None = None,
    ) -> dict[str, Any]:
        """Sign an authorisation (or, with ``revoke``, its revocation) for the ledger to
        mirror this wallet's L2 account balance of ``token`` (a StarkNet address)."""
        message = {
            "account": self.address,
            "l2_address": f"{self.stark_account:#x}",
            "token": f"{parse_address(token):#x}",
            "nonce": str(nonce_or_default(nonce)),
            "expiry": str(expiry_or_default(expiry)),
        }
        return self.sign_action("mirror_revoke" if revoke else "mirror_authorize", message, domain)

    def onboarding(self, domain: snip12.Domain) -> dict[str, Any]:
        """The onboarding envelope: each key signs the other's identity."""
        l1 = eip712.onboarding_message(
            self.l1_chain_id, self.address, self.stark_public_key, self.stark_account
        )
        digest = snip12.message_hash(
            domain, envelopes.ONBOARDING_TYPE, {"account": self.address}, self.stark_account
        )
        r, s = stark.sign(digest, self.stark_private_key)
        return {
            "format": envelopes.ONBOARDING_FORMAT,
            **self.signer_json(),
            "l1_chain_id": self.l1_chain_id,
            "l1_signature": "0x" + self.sign_l1(l1).hex(),
            "domain": domain.to_json(),
            "l2_signature": [f"{r:#x}", f"{s:#x}"],
        }

    # ------------------------------------------------------------------ operator duties
    def sign_system(self, request: TxRequest) -> TxRequest:
        """Sign a system event (deposit, reversal, market data, ...) as an operator."""
        return envelopes.sign_system(request, self.address, self.sign_l1, self.l1_chain_id)

    def sign_block(self, header: BlockHeader) -> bytes:
        """Sign a block header as an operator."""
        return self.sign_l1(envelopes.seal_event(header, self.l1_chain_id))
