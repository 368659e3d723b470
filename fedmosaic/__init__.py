"""fedmosaic package."""
