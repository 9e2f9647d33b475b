"""Signed envelopes: the JSON a wallet or the operator produces, checked and turned into
journal requests. Pure: parsing, hashing and signature checks, no I/O.

User action (SNIP-12 revision 1, signed by the owner's L2 key)::

    {"format": "ledger.action/1", "action": "transfer",
     "domain": {"name": "ledger", "version": "1", "chainId": "LEDGER", "revision": "1"},
     "message": {"from": "0x…", "to": "0x…", "amount": "10000000", "nonce": "1", "expiry": "…"},
     "signer": {"account": "0x<L1>", "stark_public_key": "0x…", "stark_account": "0x…"},
     "signature": ["0x<r>", "0x<s>"]}

Onboarding (EIP-712 by the L1 key over the L2 key and account; SNIP-12 by the L2 key over
the L1 address)::

    {"format": "ledger.onboarding/1", "account": "0x<L1>", "stark_public_key": "0x…",
     "stark_account": "0x…", "l1_chain_id": 1, "l1_signature": "0x<r‖s‖v>",
     "domain": {…}, "l2_signature": ["0x<r>", "0x<s>"]}

System events carry ``"auth": {"operator": "0x<L1>", "signature": "0x<r‖s‖v>"}`` in their
metadata: an EIP-712 ``SystemEvent{kind, key, digest}`` where ``digest`` is the request's
SHA-256 digest computed without the ``auth`` entry.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ledger.core import eip712, operations, snip12, stark
from ledger.core.accounts import normalize_address
from ledger.core.authorization import MAX_NONCE, ONBOARDING, OPERATOR, USER, Auth, scheme_for
from ledger.core.blocks import BlockHeader
from ledger.core.encoding import canonical_json
from ledger.core.journal import TxKind, TxRequest, canonical_account
from ledger.core.mirror import MIRROR_ACTIONS
from ledger.errors import (
    BadSignature,
    InvalidAccount,
    LedgerError,
    MalformedEnvelope,
    NotOwner,
    WrongDomain,
)

ACTION_FORMAT = "ledger.action/1"
ONBOARDING_FORMAT = "ledger.onboarding/1"
_NONCE_EXPIRY = (("nonce", "u128"), ("expiry", "timestamp"))

ACTION_TYPES: dict[str, snip12.StructType] = {
    "withdraw": snip12.StructType(
        "Withdraw", (("account", "string"), ("amount", "u128"), *_NONCE_EXPIRY)
    ),
    "transfer": snip12.StructType(
        "Transfer", (("from", "string"), ("to", "string"), ("amount", "u128"), *_NONCE_EXPIRY)
    ),
    "set_margin_mode": snip12.StructType(
        "SetMarginMode",
        (("account", "string"), ("mode", "shortstring"), ("leverage", "u128"), *_NONCE_EXPIRY),
    ),
    "order": snip12.StructType(
        "Order",
        (
            ("account", "string"),
            ("market", "string"),
            ("side", "shortstring"),
            ("size", "u128"),
            ("limit_price", "u128"),
            *_NONCE_EXPIRY,
        ),
    ),
}
_MIRROR_FIELDS = (
    ("account", "string"),
    ("l2_address", "ContractAddress"),
    ("token", "ContractAddress"),
    *_NONCE_EXPIRY,
)
# Opting in to (and out of) the StarkNet balance mirror (``ledger.core.mirror``).
ACTION_TYPES["mirror_authorize"] = snip12.StructType("MirrorAuthorization", _MIRROR_FIELDS)
ACTION_TYPES["mirror_revoke"] = snip12.StructType("MirrorRevocation", _MIRROR_FIELDS)
ONBOARDING_TYPE = snip12.StructType("Onboarding", (("account", "ContractAddress"),))


@dataclass(frozen=True)
class SignedAction:
    """A parsed user action (its signature checked only if it came from
    :func:`verify_action`); ``values`` are the typed message fields, ``envelope`` its
    canonical JSON."""

    action: str
    values: dict[str, Any]
    auth: Auth
    envelope: dict[str, Any]

    @property
    def owner(self) -> str:
        return self.auth.signer


def _field(data: Mapping[str, Any], name: str, kind: type) -> Any:
    value = data.get(name) if isinstance(data, Mapping) else None
    if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
        raise MalformedEnvelope(f"field {name!r} must be a {kind.__name__}")
    return value


def _hex_int(text: object, name: str, bound: int = 2**256) -> int:
    if not isinstance(text, str) or not text.startswith("0x"):
        raise MalformedEnvelope(f"{name} must be a 0x-prefixed hex string")
    try:
        value = int(text, 16)
    except ValueError as exc:
        raise MalformedEnvelope(f"{name} is not hex: {text!r}") from exc
    if not 0 <= value < bound:
        raise MalformedEnvelope(f"{name} is out of range")
    return value


def _stark_signature(data: object) -> tuple[int, int]:
    if not isinstance(data, list) or len(data) != 2:
        raise MalformedEnvelope("signature must be a list [r, s] of two hex strings")
    return _hex_int(data[0], "signature r"), _hex_int(data[1], "signature s")


def _domain(data: object, expected: snip12.Domain) -> snip12.Domain:
    if not isinstance(data, Mapping) or set(data) != {"name", "version", "chainId", "revision"}:
        raise MalformedEnvelope("domain must have exactly name, version, chainId and revision")
    if not all(isinstance(v, str) for v in data.values()):
        raise MalformedEnvelope("domain values must be strings")
    domain = snip12.Domain(data["name"], data["version"], data["chainId"], data["revision"])
    if domain != expected:
        raise WrongDomain(
            f"signed for domain {domain.to_json()}, this ledger is {expected.to_json()}"
        )
    return domain


def _stark_signer(signer: object) -> tuple[str, int, int]:
    if not isinstance(signer, Mapping):
        raise MalformedEnvelope("signer must be an object")
    try:
        owner = normalize_address(_field(signer, "account", str))
    except InvalidAccount as exc:
        raise MalformedEnvelope(f"signer account: {exc}") from exc
    public_key = _hex_int(signer.get("stark_public_key"), "stark_public_key", stark.FIELD_PRIME)
    account = _hex_int(signer.get("stark_account"), "stark_account", stark.FIELD_PRIME)
    if stark.account_address(public_key) != account:
        raise BadSignature("stark_account is not the account address of stark_public_key")
    return owner, public_key, account


def _verify_stark(message_hash: int, signature: tuple[int, int], public_key: int) -> None:
    if not stark.verify(message_hash, *signature, public_key):
        raise BadSignature("the L2 signature does not verify for the signer's key")


def parse_action(envelope: object, domain: snip12.Domain) -> SignedAction:
    """Check a user action envelope's shape, domain and values, not its signature (use
    :func:`verify_action` for that): enough to build the request it asks for."""
    if not isinstance(envelope, Mapping) or envelope.get("format") != ACTION_FORMAT:
        raise MalformedEnvelope(f"not a signed action: format must be {ACTION_FORMAT!r}")
    if set(envelope) != {"format", "action", "domain", "message", "signer", "signature"}:
        raise MalformedEnvelope(
            "a signed action has exactly: format, action, domain, message, signer, signature"
        )
    action = envelope["action"]
    if not isinstance(action, str) or action not in ACTION_TYPES:
        raise MalformedEnvelope(f"unknown action {action!r}; known: {', '.join(ACTION_TYPES)}")
    struct = ACTION_TYPES[action]
    _domain(envelope["domain"], domain)
    owner, public_key, account = _stark_signer(envelope["signer"])
    message = envelope["message"]
    if not isinstance(message, Mapping) or set(message) != set(struct.field_names):
        raise MalformedEnvelope(f"{action} message needs exactly: {', '.join(struct.field_names)}")
    if not all(type(value) in (str, int) for value in message.values()):
        raise MalformedEnvelope(f"{action} message values must be strings or integers")
    r, s = _stark_signature(envelope["signature"])
    try:
        values = {name: _typed(kind, message[name]) for name, kind in struct.fields}
    except ValueError as exc:
        raise MalformedEnvelope(f"{action} message: {exc}") from exc
    nonce = values["nonce"]
    if not 0 < nonce <= MAX_NONCE:
        raise MalformedEnvelope(f"nonce must be in 1..{MAX_NONCE}")
    subject = canonical_account(values.get("account", values.get("from", owner)))
    auth = Auth(USER, owner, nonce, values["expiry"], public_key, subject)
    # Stored in canonical form, so equivalent spellings of one action (hex or decimal
    # numbers, either Stark signature twin) cannot yield different journal bytes.
    canonical = {
        "format": ACTION_FORMAT,
        "action": action,
        "domain": domain.to_json(),
        "message": {name: str(values[name]) for name in struct.field_names},
        "signer": {
            "account": owner,
            "stark_public_key": f"{public_key:#x}",
            "stark_account": f"{account:#x}",
        },
        "signature": _canonical_stark_signature(r, s),
    }
    return SignedAction(action, values, auth, canonical)


def _canonical_stark_signature(r: int, s: int) -> list[str]:
    """``(r, s)`` and ``(r, n - s)`` both verify (only x of the point is checked): keep the
    smaller ``s``, so the journal stores one form whichever twin was submitted."""
    return [f"{r:#x}", f"{min(s, stark.EC_ORDER - s):#x}"]


def verify_action(envelope: object, domain: snip12.Domain) -> SignedAction:
    """Check a user action envelope's shape, domain, values and signature."""
    parsed = parse_action(envelope, domain)
    struct = ACTION_TYPES[parsed.action]
    account = int(parsed.envelope["signer"]["stark_account"], 16)
    try:
        message_hash = snip12.message_hash(domain, struct, parsed.envelope["message"], account)
    except (ValueError, UnicodeError) as exc:
        raise MalformedEnvelope(f"{parsed.action} message: {exc}") from exc
    _verify_stark(
        message_hash, _stark_signature(parsed.envelope["signature"]), parsed.auth.stark_key
    )
    return parsed


def _typed(kind: str, value: Any) -> Any:
    if kind in ("u128", "timestamp"):
        return snip12.encode_u128(value)
    if kind == "ContractAddress":
        return f"{snip12.encode_felt(value):#x}"
    return value


def request_for_action(action: SignedAction) -> TxRequest:
    """The journal request a user action asks for (its key is owner/nonce)."""
    values = action.values
    key = f"{action.owner}/{action.auth.nonce}"
    metadata = {"auth": action.envelope}
    if action.action == "withdraw":
        request = operations.withdrawal(values["account"], values["amount"], key, metadata)
    elif action.action == "transfer":
        request = operations.transfer(values["from"], values["to"], values["amount"], key, metadata)
    elif action.action in ("set_margin_mode", *MIRROR_ACTIONS):
        if action.action in MIRROR_ACTIONS:
            _check_mirror_action(action)
        request = TxRequest(TxKind.ACCOUNT_SETTING.value, key, (), canonical_json(metadata))
    else:
        raise MalformedEnvelope("an order is not a transaction: it is carried by a fill")
    return request._replace(auth=action.auth)


def _check_mirror_action(action: SignedAction) -> None:
    """An owner mirrors its own L2 account only: the one whose key signed the action."""
    account, l2_address = action.values["account"], action.values["l2_address"]
    if canonical_account(account) != action.owner:
        raise MalformedEnvelope(
            f"a mirror authorisation names the owner's main account {action.owner}, not {account}"
        )
    signer_account = action.envelope["signer"]["stark_account"]
    if l2_address != signer_account:
        raise NotOwner(
            f"{action.owner} can only mirror its own L2 account {signer_account}, not {l2_address}"
        )


def parse_onboarding(
    envelope: object, domain: snip12.Domain, l1_chain_id: int
) -> tuple[Auth, dict[str, Any]]:
    """Check an onboarding envelope's shape, chain and domain, not its signatures (use
    :func:`verify_onboarding` for that); returns its Auth and canonical JSON."""
    expected = {
        "format",
        "account",
        "stark_public_key",
        "stark_account",
        "l1_chain_id",
        "l1_signature",
        "domain",
        "l2_signature",
    }
    if not isinstance(envelope, Mapping) or envelope.get("format") != ONBOARDING_FORMAT:
        raise MalformedEnvelope(f"not an onboarding: format must be {ONBOARDING_FORMAT!r}")
    if set(envelope) != expected:
        raise MalformedEnvelope(f"an onboarding has exactly: {', '.join(sorted(expected))}")
    owner, public_key, account = _stark_signer(envelope)
    if envelope["l1_chain_id"] != l1_chain_id:
        raise WrongDomain(
            f"onboarding signed for L1 chain {envelope['l1_chain_id']}, "
            f"this ledger uses {l1_chain_id}"
        )
    _domain(envelope["domain"], domain)
    l1_signature = eip712.parse_signature(envelope["l1_signature"])
    r, s = _stark_signature(envelope["l2_signature"])
    canonical = {
        "format": ONBOARDING_FORMAT,
        "account": owner,
        "stark_public_key": f"{public_key:#x}",
        "stark_account": f"{account:#x}",
        "l1_chain_id": l1_chain_id,
        "l1_signature": "0x" + l1_signature.hex(),
        "domain": domain.to_json(),
        "l2_signature": _canonical_stark_signature(r, s),
    }
    return Auth(ONBOARDING, owner, stark_key=public_key, subject=f"{account:#x}"), canonical


def verify_onboarding(
    envelope: object, domain: snip12.Domain, l1_chain_id: int
) -> tuple[Auth, dict[str, Any]]:
    """Check an onboarding envelope and both its signatures."""
    auth, canonical = parse_onboarding(envelope, domain, l1_chain_id)
    owner, account = auth.signer, int(auth.subject, 16)
    l1_message = eip712.onboarding_message(l1_chain_id, owner, auth.stark_key, account)
    signer = eip712.recover(l1_message, bytes.fromhex(canonical["l1_signature"][2:]))
    if signer != owner:
        raise BadSignature(f"the L1 signature is by {signer}, not {owner}")
    message_hash = snip12.message_hash(domain, ONBOARDING_TYPE, {"account": owner}, account)
    r, s = (int(x, 16) for x in canonical["l2_signature"])
    _verify_stark(message_hash, (r, s), auth.stark_key)
    return auth, canonical


def request_for_onboarding(auth: Auth, envelope: dict[str, Any]) -> TxRequest:
    """The journal request that records an onboarding."""
    return TxRequest(
        TxKind.ONBOARDING.value,
        f"onboard/{auth.signer}",
        (),
        canonical_json({"auth": envelope}),
        auth=auth,
    )


# ------------------------------------------------------------------ operator system events
def system_event(request: TxRequest, l1_chain_id: int) -> dict[str, Any]:
    """The EIP-712 message an operator signs for ``request`` (which has no auth yet)."""
    return eip712.system_event_message(l1_chain_id, request.kind, request.key, request.digest())


def with_operator_signature(request: TxRequest, operator: str, signature: bytes) -> TxRequest:
    """``request`` with the operator's signature in its metadata and its Auth attached."""
    metadata = json.loads(request.metadata)
    metadata["auth"] = {"operator": operator, "signature": "0x" + signature.hex()}
    subject = metadata.get("add", "") if request.kind == TxKind.OPERATOR_KEYS.value else ""
    auth = Auth(OPERATOR, operator, subject=subject)
    return request._replace(metadata=canonical_json(metadata), auth=auth)


def sign_system(
    request: TxRequest, operator: str, sign: Callable[[dict[str, Any]], bytes], l1_chain_id: int
) -> TxRequest:
    """Sign ``request`` as ``operator`` with ``sign`` (which signs EIP-712 typed data)."""
    return with_operator_signature(request, operator, sign(system_event(request, l1_chain_id)))


def verify_operator(request: TxRequest, l1_chain_id: int) -> Auth:
    """Recover the operator that signed a system request from its metadata."""
    try:
        metadata = json.loads(request.metadata)
        auth = metadata.pop("auth")
        operator = normalize_address(auth["operator"])
        signature = eip712.parse_signature(auth["signature"])
    except (ValueError, KeyError, TypeError, LedgerError) as exc:
        raise MalformedEnvelope(f"system event without a valid operator signature: {exc}") from exc
    unsigned = request._replace(metadata=canonical_json(metadata), auth=None)
    signer = eip712.recover(system_event(unsigned, l1_chain_id), signature)
    if signer != operator:
        raise BadSignature(f"the operator signature is by {signer}, not {operator}")
    subject = metadata.get("add", "") if request.kind == TxKind.OPERATOR_KEYS.value else ""
    return Auth(OPERATOR, operator, subject=subject)


def seal_event(header: BlockHeader, l1_chain_id: int) -> dict[str, Any]:
    """The EIP-712 message an operator signs to seal a block: its number and hash."""
    return eip712.system_event_message(l1_chain_id, "seal", f"block-{header.number}", header.hash)


@lru_cache(maxsize=1 << 16)
def _verified_order(text: str, domain: snip12.Domain) -> str:
    """The canonical form of a verified order (cached: one order backs many fills)."""
    action = verify_action(json.loads(text), domain)
    if action.action != "order":
        raise MalformedEnvelope(f"a fill carries signed orders, not a {action.action}")
    return canonical_json(action.envelope)


def verify_orders(request: TxRequest, domain: snip12.Domain) -> None:
    """Verify the buy and sell orders a fill carries, stored in canonical form."""
    try:
        metadata = json.loads(request.metadata)
        orders = [canonical_json(metadata[side]) for side in ("buy", "sell")]
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedEnvelope("a fill carries the signed buy and sell orders") from exc
    for side, text in zip(("buy", "sell"), orders, strict=True):
        if _verified_order(text, domain) != text:
            raise MalformedEnvelope(f"the {side} order is not stored in canonical form")


def auth_of(request: TxRequest, domain: snip12.Domain, l1_chain_id: int) -> Auth:
    """Re-derive who signed a stored or submitted request from the signature in its
    metadata alone, and check the request is exactly what was signed (for a fill, also
    the two signed orders it carries)."""
    scheme = scheme_for(request.kind)
    if scheme == OPERATOR:
        auth = verify_operator(request, l1_chain_id)
        if request.kind == TxKind.FILL.value:
            verify_orders(request, domain)
        return auth
    try:
        envelope = json.loads(request.metadata)["auth"]
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedEnvelope(f"{request.kind} without a signed envelope") from exc
    if scheme == ONBOARDING:
        auth, envelope = verify_onboarding(envelope, domain, l1_chain_id)
        signed = request_for_onboarding(auth, envelope)
    else:
        verified = verify_action(envelope, domain)
        auth, signed = verified.auth, request_for_action(verified)
    if signed._replace(auth=None) != request._replace(auth=None):
        raise BadSignature(f"{request.kind} {request.key!r} is not what its envelope signed")
    return auth
