"""DRAKE."""
