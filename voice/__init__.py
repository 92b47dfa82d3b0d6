"""Telephony-centric voice and IVR server."""

__version__ = "0.1.0"
