"""The method registry: one lazy line per federated method (a method = one file + one line here)."""

from __future__ import annotations

from drake.registry import Registry

METHODS: Registry = Registry("method")
