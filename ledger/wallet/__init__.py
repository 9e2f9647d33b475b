"""Self-custodial wallets: an Ethereum key in a keystore file, and the StarkNet key it
derives. This is the client side: it signs; the ledger only verifies."""

from ledger.wallet.keystore import create_keystore, load_keystore
from ledger.wallet.signer import Wallet

__all__ = ["Wallet", "create_keystore", "load_keystore"]
