"""StarkNet keys: the L2 key ground from an L1 signature, Stark ECDSA, account addresses.

Signing follows starknet-py's ``message_signature`` exactly (RFC 6979 ``k`` with seed 32,
same formula, same checks), so the signatures are bit-identical. Two things are done
differently because crypto-cpp's ``Sign`` takes ~100 ms (its modular inverse is a bit-by-bit
long division): the inverses use Python's ``pow``, and ``k·G`` uses a fixed-base table
(32 windows of 8 bits, built once) instead of a generic scalar multiplication.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

from crypto_cpp_py.utils import cpp_generate_k_rfc6979
from starknet_py.constants import EC_ORDER as EC_ORDER  # re-exported: the curve order
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


@lru_cache(maxsize=4096)
def account_address(stark_public_key: int) -> int:
    """Counterfactual L2 account address: the OpenZeppelin account class, salt = key."""
    return int(
        compute_address(
            class_hash=ACCOUNT_CLASS_HASH,
            constructor_calldata=[stark_public_key],
            salt=stark_public_key,
        )
    )


# Curve y^2 = x^3 + x + BETA over FIELD_PRIME, generator G.
_GX = 0x1EF15C18599971B7BECED415A40F0C7DEACFD9B0D1819E03D723D8BC943CFCA
_GY = 0x5668060AA49730B7BE4801DF46EC62DE53ECD11ABE43A32873000C36E8DC1F
_WINDOW = 8
Jacobian = tuple[int, int, int]


def _double(point: Jacobian) -> Jacobian:
    x, y, z = point
    if z == 0 or y == 0:
        return 0, 1, 0
    p = FIELD_PRIME
    yy = y * y % p
    s = 4 * x * yy % p
    zz = z * z % p
    m = (3 * x * x + zz * zz) % p  # a = 1
    x3 = (m * m - 2 * s) % p
    return x3, (m * (s - x3) - 8 * yy * yy) % p, 2 * y * z % p


def _add_affine(point: Jacobian, x2: int, y2: int) -> Jacobian:
    """Jacobian + affine point (mixed addition)."""
    x1, y1, z1 = point
    if z1 == 0:
        return x2, y2, 1
    p = FIELD_PRIME
    z1z1 = z1 * z1 % p
    h = (x2 * z1z1 - x1) % p
    r = (y2 * z1 * z1z1 - y1) % p
    if h == 0:
        return _double(point) if r == 0 else (0, 1, 0)
    hh = h * h % p
    hhh = h * hh % p
    v = x1 * hh % p
    x3 = (r * r - hhh - 2 * v) % p
    return x3, (r * (v - x3) - y1 * hhh) % p, z1 * h % p


def _affine(point: Jacobian) -> tuple[int, int]:
    x, y, z = point
    inverse = pow(z, -1, FIELD_PRIME)
    square = inverse * inverse % FIELD_PRIME
    return x * square % FIELD_PRIME, y * square * inverse % FIELD_PRIME


@lru_cache(maxsize=1)
def _table() -> list[list[tuple[int, int]]]:
    """table[i][d - 1] = d · 2^(8i) · G, affine."""
    rows = []
    base = (_GX, _GY)
    for _ in range((252 + _WINDOW - 1) // _WINDOW):
        row = [base]
        point: Jacobian = (base[0], base[1], 1)
        for _ in range(2, 1 << _WINDOW):
            point = _add_affine(point, *base)
            row.append(_affine(point))
        rows.append(row)
        base = _affine(_add_affine(point, *base))
    return rows


def _base_multiple_x(k: int) -> int:
    """x coordinate of k·G for 0 < k < 2**256."""
    point: Jacobian = (0, 1, 0)
    for row in _table():
        digit = k & 0xFF
        if digit:
            point = _add_affine(point, *row[digit - 1])
        k >>= _WINDOW
        if not k:
            break
    assert point[2] != 0, "k·G is the point at infinity"
    return _affine(point)[0]


def sign(message_hash: int, private_key: int) -> tuple[int, int]:
    """Stark ECDSA signature ``(r, s)``, identical to starknet-py's ``message_signature``."""
    if not 0 < message_hash < SIGNATURE_BOUND:
        raise ValueError("message hash must be in [1, 2**251)")
    k = cpp_generate_k_rfc6979(message_hash, private_key, RFC6979_SEED)
    r = _base_multiple_x(k)
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
