"""Stark ECDSA signing must be bit-identical to starknet-py's, only faster."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from starknet_py.constants import EC_ORDER
from starknet_py.hash.utils import message_signature, private_to_stark_key

from ledger.core import stark

keys = st.integers(min_value=1, max_value=EC_ORDER - 1)
hashes = st.integers(min_value=1, max_value=2**251 - 1)


@settings(max_examples=25, deadline=None)
@given(keys, hashes)
def test_signatures_equal_starknet_py(private_key: int, message_hash: int) -> None:
    signature = stark.sign(message_hash, private_key)
    assert signature == message_signature(message_hash, private_key)
    public_key = private_to_stark_key(private_key)
    assert stark.verify(message_hash, *signature, public_key)
    assert not stark.verify(message_hash ^ 1, *signature, public_key)


def test_base_multiple_matches_the_public_key() -> None:
    for private_key in (1, 2, 255, 256, 2**64 + 7, EC_ORDER - 1):
        assert stark._base_multiple_x(private_key) == private_to_stark_key(private_key)


def test_verify_refuses_out_of_range_values() -> None:
    private_key = 0xC0FFEE
    public_key = stark.public_key(private_key)
    r, s = stark.sign(42, private_key)
    assert stark.verify(42, r, s, public_key)
    assert not stark.verify(42, 0, s, public_key)
    assert not stark.verify(42, r, 0, public_key)
    assert not stark.verify(42, r + 2**251, s, public_key)
    assert not stark.verify(0, r, s, public_key)
    assert not stark.verify(42, r, s, 0)


def test_grinding_is_deterministic_and_in_range() -> None:
    for seed in (0, 1, 2**255, 0xDEADBEEF):
        key = stark.grind_key(seed)
        assert key == stark.grind_key(seed)
        assert 0 <= key < EC_ORDER
    assert stark.grind_key(1) != stark.grind_key(2)
