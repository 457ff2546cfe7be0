"""Training sets on disk and in memory: the paired HDF5 format, torch Datasets, augmentations."""
