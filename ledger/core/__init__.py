"""Pure domain code: amounts, accounts, postings, encoding, hashing, Merkle trees.

Nothing in here knows about SQL, HTTP, files or chains.
"""
