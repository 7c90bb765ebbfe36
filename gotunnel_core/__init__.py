"""gotunnel core: models, configuration, plugin manager, daemon, certificates and names."""

__version__ = "0.1.0"
