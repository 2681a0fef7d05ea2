"""The forward model: SEDModel, its components, and what is observed."""

from tengri.model.observation import FLUX_UNITS, Joint, Photometry, Spectroscopy, to_cgs_fnu
from tengri.model.sed_model import SEDModel

__all__ = ["SEDModel", "Photometry", "Spectroscopy", "Joint", "FLUX_UNITS", "to_cgs_fnu"]
