"""DRAKE-synth: procedural, deterministic analogues of the DRAKE tasks (see families/ and world.py)."""

from drake.data.synth.base import FAMILIES, Sample, SampleContext

__all__ = ["FAMILIES", "Sample", "SampleContext"]
