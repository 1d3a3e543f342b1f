"""scratchnade: neural autoregressive distribution estimation from scratch (NumPy / CuPy).

Every model of the NADE lecture with a hand-written forward and backward pass:
see ``scratchnade.models``. Arrays go through one shim, ``scratchnade.backend``.
"""
__version__ = "0.1.0"
