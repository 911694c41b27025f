"""Backends run requests: ``local`` (diffusers in-process), ``relay`` (an upstream
fal-compatible queue) and ``builtin`` (utility endpoints used by tests and benchmarks).
"""

from openfal.backends.base import Backend, Job, Output

__all__ = ["Backend", "Job", "Output"]
