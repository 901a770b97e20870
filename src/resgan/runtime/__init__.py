"""The runtime around the ML core: what resgan needs from Ray beyond its public API."""
