"""Expected Grad-CAM (Buono et al. 2024), reconstructed: experiments, stages, figures, claim values.

The paper's code was never released and its body is not available, so every table written here
is our measurement of the abstract's claims (paper_notes/expected_gradcam.md).
"""
