"""resgan: a reproducible, distributed pipeline for residual GANs."""

__version__ = "0.1.0"
