"""openfal: a self-hosted server that speaks fal.ai's queue API."""

__version__ = "0.1.0"
