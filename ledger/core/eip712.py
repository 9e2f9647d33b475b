"""EIP-712 messages signed by L1 (Ethereum) keys: the StarkNet key derivation, onboarding,
and the operator's system events. Hashing is eth-account's ``encode_typed_data``; recovery
refuses malformed and malleable (high-s) signatures instead of normalising them.
"""

from __future__ import annotations

from typing import Any

from Crypto.Hash import keccak
from eth_account.messages import encode_typed_data
from eth_keys.datatypes import Signature
from eth_keys.exceptions import BadSignature as EthBadSignature

from ledger.errors import BadSignature, MalformedEnvelope, MalleableSignature

DOMAIN_NAME = "ledger"
DOMAIN_VERSION = "1"
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
STARK_KEY_ACTION = "STARK Key"

_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
]
_TYPES: dict[str, list[dict[str, str]]] = {
    "Constant": [{"name": "action", "type": "string"}],
    "Onboarding": [
        {"name": "account", "type": "address"},
        {"name": "starkPublicKey", "type": "uint256"},
        {"name": "starkAccount", "type": "uint256"},
    ],
    "SystemEvent": [
        {"name": "kind", "type": "string"},
        {"name": "key", "type": "string"},
        {"name": "digest", "type": "bytes32"},
    ],
}


def full_message(chain_id: int, primary: str, message: dict[str, Any]) -> dict[str, Any]:
    """The complete typed-data JSON for ``primary`` under the ledger's domain."""
    return {
        "types": {"EIP712Domain": _DOMAIN_TYPE, primary: _TYPES[primary]},
        "primaryType": primary,
        "domain": {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": chain_id},
        "message": message,
    }


def stark_key_message(chain_id: int) -> dict[str, Any]:
    """What the L1 wallet signs to derive its StarkNet key (the Paradex scheme, our domain)."""
    return full_message(chain_id, "Constant", {"action": STARK_KEY_ACTION})


def onboarding_message(
    chain_id: int, account: str, stark_public_key: int, stark_account: int
) -> dict[str, Any]:
    """What the L1 key signs to bind itself to an L2 key and account."""
    return full_message(
        chain_id,
        "Onboarding",
        {"account": account, "starkPublicKey": stark_public_key, "starkAccount": stark_account},
    )


def system_event_message(chain_id: int, kind: str, key: str, digest: bytes) -> dict[str, Any]:
    """What an operator key signs for a system event: its kind, key and request digest."""
    return full_message(chain_id, "SystemEvent", {"kind": kind, "key": key, "digest": digest})


def digest(message: dict[str, Any]) -> bytes:
    """``keccak256(0x19 0x01 ‖ domainSeparator ‖ hashStruct(message))``."""
    signable = encode_typed_data(full_message=message)
    data = b"\x19" + signable.version + signable.header + signable.body
    return keccak.new(digest_bits=256, data=data).digest()


def parse_signature(text: str) -> bytes:
    """A 65-byte ``r ‖ s ‖ v`` signature from hex."""
    try:
        raw = bytes.fromhex(text.removeprefix("0x"))
    except (ValueError, AttributeError) as exc:
        raise MalformedEnvelope(f"signature is not hex: {text!r}") from exc
    if len(raw) != 65:
        raise MalformedEnvelope(f"an EIP-712 signature has 65 bytes, got {len(raw)}")
    return raw


def recover(message: dict[str, Any], signature: bytes) -> str:
    """The lower-case address that signed ``message``; refuses high-s and bad ``v``."""
    if len(signature) != 65:
        raise MalformedEnvelope(f"an EIP-712 signature has 65 bytes, got {len(signature)}")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64]
    if v not in (27, 28):
        raise MalformedEnvelope(f"signature v must be 27 or 28, got {v}")
    if not (0 < r < SECP256K1_N and 0 < s < SECP256K1_N):
        raise BadSignature("signature r or s is out of range")
    if s > SECP256K1_N // 2:
        raise MalleableSignature("signature has a high s value (malleable); use its low-s form")
    try:
        public = Signature(vrs=(v - 27, r, s)).recover_public_key_from_msg_hash(digest(message))
    except EthBadSignature as exc:
        raise BadSignature(f"signature does not recover a key: {exc}") from exc
    return str(public.to_address()).lower()
