"""deepbass_jax: Deep Bayesian Active Semi-Supervised Learning (Rottmann, Kahl, Gottschalk 2018) in JAX."""

__version__ = "0.1.0"
