"""Scaling-law research on pretraining data: pure numerics (no torch)."""

__version__ = "0.1.0"
