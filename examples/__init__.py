"""Examples of what a user brings: a network of their own (wide_cnn.py)."""
