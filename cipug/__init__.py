"""cipug — container images pinning and updating gadget."""

__version__ = "0.1.0"
