"""Several processes, one run: `distributed` joins them (jax.distributed), `collective` is what the driver exchanges
through (nothing for one process), `data_parallel` is line 12 with the gradient exchange."""
