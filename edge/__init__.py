"""The till-side node daemon: devices, identity, events and their composition."""

__version__ = "0.1.0"
