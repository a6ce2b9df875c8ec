"""The POS side of the node: pairing with the cashier's till, the till session, sales and the POS API.

Business rules live in the modules of this package; ``api`` only translates HTTP to calls on them.
"""
