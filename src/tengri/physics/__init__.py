"""Physical processes of the forward model as pure ``jax.numpy`` functions.

One process a module (cosmology, IGM transmission, star-formation histories, dust
attenuation, ...). Every function is jittable, vmappable and differentiable in its
physical arguments, works in float64, and carries its units in its argument names
(``wavelength_aa``, ``age_yr``, ``lookback_yr``, ``mass_formed_msun``). Modules are
imported explicitly (``from tengri.physics import sfh``); nothing is re-exported here.
"""
