"""Action files: the unsigned JSON a user writes for ``ledger sign``.

``{"action": "transfer", "from": "0x…", "to": "0x…", "amount": "10.25"}``,
``{"action": "withdraw", "account": "0x…", "amount": "5"}``,
``{"action": "set_margin_mode", "account": "0x…", "mode": "cross", "leverage": 10}``,
``{"action": "order", "account": "0x…", "market": "BTC-USD-PERP", "side": "buy",
"size": "100000", "limit_price": "70000000000"}`` (order size and price in base units).
``nonce`` and ``expiry`` are optional everywhere. USDC amounts are decimal strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ledger.core import envelopes, snip12
from ledger.core.journal import canonical_account
from ledger.errors import MalformedEnvelope
from ledger.wallet.signer import Wallet, default_expiry, default_nonce, units


def sign_action_file(action: object, wallet: Wallet, domain: snip12.Domain) -> dict[str, Any]:
    """Sign the action described by an action file."""
    if not isinstance(action, Mapping) or action.get("action") not in envelopes.ACTION_TYPES:
        known = ", ".join(envelopes.ACTION_TYPES)
        raise MalformedEnvelope(f'an action file needs "action": one of {known}')
    kind = action["action"]
    fields = envelopes.ACTION_TYPES[kind].field_names
    given = {name: action[name] for name in action if name != "action"}
    missing = [name for name in fields if name not in given and name not in ("nonce", "expiry")]
    unknown = [name for name in given if name not in fields]
    if missing or unknown:
        raise MalformedEnvelope(
            f"{kind} action: missing {missing or 'nothing'}, unknown {unknown or 'nothing'}"
        )
    message: dict[str, Any] = {}
    for name in fields:
        value = given.get(name)
        if name == "nonce":
            value = default_nonce() if value is None else value
        elif name == "expiry":
            value = default_expiry() if value is None else value
        elif name == "amount":
            value = units(str(value))
        elif name in ("account", "from", "to"):
            value = canonical_account(str(value))
        message[name] = str(value)
    try:
        return wallet.sign_action(kind, message, domain)
    except ValueError as exc:
        raise MalformedEnvelope(f"{kind} action: {exc}") from exc
