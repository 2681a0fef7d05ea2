"""Analysis of fit results: convergence and emission-line diagnostics."""

from tengri.analysis import diagnostics

__all__ = ["diagnostics"]
