"""Validation of inference on simulated data (simulation-based calibration)."""

from tengri.validation.sbc import run_sbc

__all__ = ["run_sbc"]
