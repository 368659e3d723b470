"""Federated harness: method interface, client runtime, engines, callbacks."""
