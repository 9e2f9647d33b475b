"""Adapters to chains: the settlement vault on an EVM (web3.py), its event watcher, and
block settlement and reconciliation. They depend on the ledger; nothing depends on them."""
