"""ledger: a hash-chained double-entry USDC ledger with Merkle state roots.

>>> from ledger import Ledger
>>> book = Ledger.init("sqlite:///ledger.db")          # doctest: +SKIP
>>> book.deposit("0x" + "ab" * 20, "100.25")           # doctest: +SKIP
"""

from ledger.audit import AuditReport
from ledger.core.amounts import USDC, Asset, format_amount, parse_amount
from ledger.core.blocks import BlockHeader
from ledger.core.journal import Posting, TxKind, TxRecord, TxRequest, make_request
from ledger.core.proofs import AccountProof
from ledger.errors import LedgerError
from ledger.ledger import Balance, Ledger
from ledger.store.sql import Receipt, StatementLine

__all__ = [
    "USDC",
    "AccountProof",
    "Asset",
    "AuditReport",
    "Balance",
    "BlockHeader",
    "Ledger",
    "LedgerError",
    "Posting",
    "Receipt",
    "StatementLine",
    "TxKind",
    "TxRecord",
    "TxRequest",
    "format_amount",
    "make_request",
    "parse_amount",
]
