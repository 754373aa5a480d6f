"""Metrics over attribution maps: similarity (Sanity Checks) and faithfulness (Expected Grad-CAM,
ParchGrad); beyond the papers, the repaired randomisation tests ``smooth_mprt`` and
``efficient_mprt`` (Hedström et al. 2023)."""
