"""Trading on the ledger: market data, fills, funding, settlement, liquidation and the
margin check every transaction passes (pure: no SQL, no chains)."""
