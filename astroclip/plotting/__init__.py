"""Matplotlib figures of the paper; every function returns a `~matplotlib.figure.Figure`."""
