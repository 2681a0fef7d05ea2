"""Inference results: the Posterior, its HDF5 storage and its figures."""

from tengri.posterior.core import Posterior

__all__ = ["Posterior"]
