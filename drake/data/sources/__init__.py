"""Real-image sources read offline from installed packages (no network), e.g. the easy-VQA set."""
