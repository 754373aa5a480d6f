"""Experiments of the three papers: each writes tidy tables; figures are drawn from them."""
