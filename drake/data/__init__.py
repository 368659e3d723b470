"""Data: synth generators, real-data sources, build pipeline, client streams."""
