"""The HTTP layer: fal's wire format in and out, nothing else."""

from openfal.http.app import create_app

__all__ = ["create_app"]
