"""Sanity Checks (Adebayo et al. 2018): parameter randomization, toy studies and experiments."""
