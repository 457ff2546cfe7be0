"""Pure torch modules: spectrum transformer, image backbones, heads, the aligned model."""
