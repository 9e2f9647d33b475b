"""Genesis: the first transaction registers the first operator key, signed by itself, and
fixes the chain ids of the signing domains, so the journal alone says who could sign what."""

from __future__ import annotations

import json

from ledger.core import snip12
from ledger.core.journal import TxKind, TxRecord, TxRequest, make_request

DOMAIN_NAME = "ledger"
DOMAIN_VERSION = "1"
DEFAULT_L1_CHAIN_ID = 31337  # local EVM devnets (anvil)
DEFAULT_L2_CHAIN_ID = "SN_SEPOLIA"


def operator_registration(operator: str, key: str, **settings: object) -> TxRequest:
    """An (unsigned) ``operator_keys`` request adding ``operator``; genesis also carries
    the settings (``l1_chain_id``, ``l2_chain_id``)."""
    return make_request(TxKind.OPERATOR_KEYS.value, key, (), {"add": operator, **settings})


def genesis_settings(record: TxRecord) -> dict[str, str]:
    """Settings fixed by a genesis registration (empty for a later key rotation)."""
    metadata = json.loads(record.metadata)
    return {
        name: str(metadata[name]) for name in ("l1_chain_id", "l2_chain_id") if name in metadata
    }


def l2_domain(l2_chain_id: str) -> snip12.Domain:
    """The SNIP-12 domain user actions are signed under."""
    return snip12.Domain(DOMAIN_NAME, DOMAIN_VERSION, l2_chain_id)
