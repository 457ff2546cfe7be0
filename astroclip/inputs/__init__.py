"""Astropy/specutils objects -> arrays on the models' grids (no torch models here)."""
