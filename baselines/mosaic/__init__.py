"""Mosaic (Liu et al., arXiv 2505.19699): per-client generators, task experts fused by a meta model, and
data-free distillation of the fused teacher into each architecture's global adapter. ``method.py`` (the
method), ``items.py`` (samples in the model's input space and their option scores), ``generator.py`` (the
client's generator and its adversarial training), ``meta.py`` (prototypes, task experts, meta model, KD loss)."""
