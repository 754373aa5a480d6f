"""Metrics over attribution maps: similarity (Sanity Checks) and faithfulness (Expected Grad-CAM, ParchGrad)."""
