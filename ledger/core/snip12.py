"""SNIP-12 revision 1 typed-data hashing for the ledger's flat action types.

Bit-identical to ``starknet_py.utils.typed_data.TypedData.from_dict(d).message_hash(addr)``
for the types declared here (tests compare both), but with the type hashes and the domain
hash computed once per type and domain instead of once per message.

Encoding rules of revision 1 (as starknet-py implements them):

* ``type_hash = sn_keccak('"Name"("field":"type",...)')`` (keccak-256 masked to 250 bits);
* ``struct_hash = poseidon(type_hash, *encoded fields)``;
* ``felt``/``shortstring``/``ContractAddress``: ints as is, ``0x…`` hex, decimal digits, else
  an ASCII short string of at most 31 characters; ``u128``/``timestamp``: 0 ≤ v < 2**128;
  ``bool``: 0 or 1; ``string``: the Cairo ByteArray ``[n_words, *31-byte words, pending,
  pending_len]`` hashed with Poseidon;
* ``message_hash = poseidon("StarkNet Message", domain_hash, account_address, struct_hash)``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from Crypto.Hash import keccak
from poseidon_py.poseidon_hash import poseidon_hash_many

BASIC_TYPES = frozenset(
    {"felt", "shortstring", "ContractAddress", "string", "u128", "timestamp", "bool"}
)
_DIGITS = re.compile(r"^[0-9]+$")
_MASK_250 = 2**250 - 1
FIELD_PRIME = 2**251 + 17 * 2**192 + 1


def sn_keccak(data: bytes) -> int:
    """StarkNet keccak: keccak-256 masked to 250 bits."""
    return int.from_bytes(keccak.new(digest_bits=256, data=data).digest(), "big") & _MASK_250


def encode_shortstring(text: str) -> int:
    """An ASCII string of at most 31 characters as a big-endian felt."""
    if len(text) > 31:
        raise ValueError(f"short string {text!r} is longer than 31 characters")
    return int.from_bytes(text.encode("ascii"), "big")


def encode_felt(value: object) -> int:
    """``felt``, ``shortstring`` and ``ContractAddress`` values."""
    if type(value) is int:
        number = value
    elif isinstance(value, str):
        if value.startswith("0x"):
            number = int(value, 16)
        elif value.isnumeric():
            number = int(value)
        else:
            number = encode_shortstring(value)
    else:
        raise ValueError(f"expected a felt, got {value!r}")
    if not 0 <= number < FIELD_PRIME:
        raise ValueError(f"felt {value!r} is outside the field")
    return number


def encode_u128(value: object) -> int:
    """``u128`` and ``timestamp`` values."""
    if type(value) is int:
        number = value
    elif isinstance(value, str) and value.startswith("0x"):
        number = int(value, 16)
    elif isinstance(value, str) and _DIGITS.match(value):
        number = int(value)
    else:
        raise ValueError(f"expected an unsigned 128-bit integer, got {value!r}")
    if not 0 <= number < 2**128:
        raise ValueError(f"{value!r} is out of range for u128")
    return number


def encode_bool(value: object) -> int:
    if value in (True, 1, "1", "true", "0x1"):
        return 1
    if value in (False, 0, "0", "false", "0x0"):
        return 0
    raise ValueError(f"expected a boolean, got {value!r}")


def string_words(value: object) -> list[int]:
    """Cairo ByteArray serialisation of an ASCII string."""
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    raw = value.encode("ascii")
    full, pending = divmod(len(raw), 31)
    words = [full]
    words += [int.from_bytes(raw[i : i + 31], "big") for i in range(0, full * 31, 31)]
    words += [int.from_bytes(raw[full * 31 :], "big"), pending]
    return words


def encode_value(kind: str, value: object) -> int:
    """Encode one field value of a basic type."""
    if kind == "string":
        return int(poseidon_hash_many(string_words(value)))
    if kind in ("u128", "timestamp"):
        return encode_u128(value)
    if kind == "bool":
        return encode_bool(value)
    return encode_felt(value)


@dataclass(frozen=True)
class StructType:
    """A flat struct of basic-typed fields (all the ledger's actions are flat)."""

    name: str
    fields: tuple[tuple[str, str], ...]

    def __post_init__(self) -> None:
        assert all(kind in BASIC_TYPES for _, kind in self.fields), self

    @cached_property
    def type_hash(self) -> int:
        encoded = ",".join(f'"{name}":"{kind}"' for name, kind in self.fields)
        return sn_keccak(f'"{self.name}"({encoded})'.encode("ascii"))

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.fields)

    def struct_hash(self, values: Mapping[str, object]) -> int:
        """Poseidon hash of the type hash and every field, in declared order."""
        if set(values) != set(self.field_names):
            raise ValueError(f"{self.name} needs exactly the fields {', '.join(self.field_names)}")
        encoded = [self.type_hash] + [
            encode_value(kind, values[name]) for name, kind in self.fields
        ]
        return int(poseidon_hash_many(encoded))

    def schema(self) -> list[dict[str, str]]:
        return [{"name": name, "type": kind} for name, kind in self.fields]


DOMAIN_TYPE = StructType(
    "StarknetDomain",
    (
        ("name", "shortstring"),
        ("version", "shortstring"),
        ("chainId", "shortstring"),
        ("revision", "shortstring"),
    ),
)
STARKNET_MESSAGE = encode_shortstring("StarkNet Message")


@dataclass(frozen=True)
class Domain:
    """A revision-1 SNIP-12 domain."""

    name: str
    version: str
    chain_id: str
    revision: str = "1"

    def to_json(self) -> dict[str, str]:
        return {
            "name": self.name,
            "version": self.version,
            "chainId": self.chain_id,
            "revision": self.revision,
        }

    @cached_property
    def hash(self) -> int:
        return DOMAIN_TYPE.struct_hash(self.to_json() | {"revision": 1})


def message_hash(
    domain: Domain, struct: StructType, values: Mapping[str, object], account: int
) -> int:
    """The hash an L2 key signs for ``values`` of ``struct`` under ``domain``."""
    return int(
        poseidon_hash_many([STARKNET_MESSAGE, domain.hash, account, struct.struct_hash(values)])
    )


def typed_data(domain: Domain, struct: StructType, values: Mapping[str, object]) -> dict[str, Any]:
    """The full SNIP-12 JSON a wallet (starknet.js, starknet-py) signs."""
    return {
        "types": {"StarknetDomain": DOMAIN_TYPE.schema(), struct.name: struct.schema()},
        "primaryType": struct.name,
        "domain": domain.to_json(),
        "message": dict(values),
    }
