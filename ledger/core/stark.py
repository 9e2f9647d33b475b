"""StarkNet keys: the L2 key ground from an L1 signature, Stark ECDSA, account addresses.

Signing follows starknet-py's ``message_signature`` exactly (RFC 6979 ``k`` with seed 32,
same formula, same checks), so the signatures are bit-identical; only the two modular
inverses are done with Python's ``pow`` instead of crypto-cpp's long-division inverse,
which takes ~100 ms per signature (measured here).
"""

from __future__ import annotations

import hashlib

from crypto_cpp_py.cpp_bindings import cpp_get_public_key
from crypto_cpp_py.utils import cpp_generate_k_rfc6979
from starknet_py.constants import EC_ORDER
from starknet_py.hash.address import compute_address
from starknet_py.hash.utils import private_to_stark_key, verify_message_signature

FIELD_PRIME = 2**251 + 17 * 2**192 + 1
SIGNATURE_BOUND = 2**251
RFC6979_SEED = 32  # starknet-py's default extra entropy

# OpenZeppelin account (Cairo 1) class hash; its constructor takes the public key.
ACCOUNT_CLASS_HASH = 0x061DAC032F228ABEF9C6626F995015233097AE253A7F72D68552DB02F2971B8F


def _indexed_sha256(seed: int, index: int) -> int:
    def padded_hex(value: int) -> str:
        digits = f"{value:x}"
        return digits if len(digits) % 2 == 0 else "0" + digits

    return int(hashlib.sha256(bytes.fromhex(padded_hex(seed) + padded_hex(index))).hexdigest(), 16)


def grind_key(seed: int) -> int:
    """StarkEx key grinding: the first ``sha256(seed ‖ i)`` below the largest multiple of
    the curve order under 2**256, reduced mod the order (no modulo bias)."""
    limit = 2**256 - (2**256 % EC_ORDER)
    index = 0
    key = _indexed_sha256(seed, index)
    while key >= limit:
        index += 1
        key = _indexed_sha256(seed, index)
    return key % EC_ORDER


def private_key_from_l1_signature(signature: bytes) -> int:
    """The L2 private key ground from ``r`` of the L1 wallet's 65-byte signature."""
    assert len(signature) == 65, len(signature)
    return grind_key(int.from_bytes(signature[:32], "big"))


def public_key(private_key: int) -> int:
    """Stark public key (x coordinate of ``private_key · G``)."""
    return int(private_to_stark_key(private_key))


def account_address(stark_public_key: int) -> int:
    """Counterfactual L2 account address: the OpenZeppelin account class, salt = key."""
    return int(
        compute_address(
            class_hash=ACCOUNT_CLASS_HASH,
            constructor_calldata=[stark_public_key],
            salt=stark_public_key,
        )
    )


def sign(message_hash: int, private_key: int) -> tuple[int, int]:
    """Stark ECDSA signature ``(r, s)``, identical to starknet-py's ``message_signature``."""
    if not 0 < message_hash < SIGNATURE_BOUND:
        raise ValueError("message hash must be in [1, 2**251)")
    k = cpp_generate_k_rfc6979(message_hash, private_key, RFC6979_SEED)
    r = int(cpp_get_public_key(k))
    if not 0 < r < SIGNATURE_BOUND:
        raise ValueError("bad nonce; sign again with another seed")
    s = (r * private_key + message_hash) * pow(k, -1, EC_ORDER) % EC_ORDER
    if s == 0 or pow(s, -1, EC_ORDER) >= SIGNATURE_BOUND:
        raise ValueError("bad nonce; sign again with another seed")
    return r, s


def verify(message_hash: int, r: int, s: int, stark_public_key: int) -> bool:
    """True when ``(r, s)`` is a valid signature of ``message_hash`` by the key."""
    if not (0 < r < SIGNATURE_BOUND and 0 < s < EC_ORDER and 0 < message_hash < SIGNATURE_BOUND):
        return False
    if not 0 < stark_public_key < FIELD_PRIME:
        return False
    try:
        return bool(verify_message_signature(message_hash, [r, s], stark_public_key))
    except ValueError:
        return False
