"""FedAMoLE (Zhang et al., arXiv 2411.19128): per-module mixtures of LoRA experts with per-client expert sets
chosen by reverse selection. ``method.py`` (the method), ``layer.py`` (the HMoLE layer), ``assign.py`` (the
exact expert assignment)."""
