"""Inference: the Problem every method solves, the method runners, the Fitter."""
