"""Pure core of the unified margin model (no SQL, no I/O).

Follows ``shared/reference/margin-model.md``. One concept per module:

- :mod:`ledger.margin.params`: default parameters (rates as exact ``Fraction``).
- :mod:`ledger.margin.positions`: position records and their units.
- :mod:`ledger.margin.black76`: Black-76 prices/deltas at r = 0 and the DTE vol-shock rule.
- :mod:`ledger.margin.cross`: cross-margin (XM) requirements per position and per account.
- :mod:`ledger.margin.portfolio`: portfolio margin (PM): min-delta and the scenario SCAN.

Units used throughout (see :mod:`ledger.margin.positions`): money is an ``int`` of USDC base
units (1 USDC = 10**6); prices are USDC base units per ONE WHOLE unit of the underlying;
sizes are signed ``int`` counts of size units, ``size_scale`` of them per whole unit
(``UnderlyingParams.size_scale``, 10**8 for BTC/ETH). Requirements round UP, credits DOWN.
"""
