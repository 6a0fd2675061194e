"""The network edge: listeners and clients."""
