"""Lightning training of the three stages: spectrum pretraining, image pretraining, alignment."""
