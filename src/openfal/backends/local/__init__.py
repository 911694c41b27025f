"""The ``local`` backend: FLUX and LTX-Video with diffusers, in this process.

Importing this package is cheap (torch and diffusers load when the first job runs),
but it raises ImportError when they are not installed, so a relay-only deployment
simply goes without the local backend.
"""

from importlib.util import find_spec

_missing = [name for name in ("torch", "diffusers", "transformers", "PIL") if find_spec(name) is None]
if _missing:
    raise ImportError(f"the local backend needs {', '.join(_missing)} (pip install openfal installs them)")

from openfal.backends.local.backend import LocalBackend  # noqa: E402
from openfal.backends.local.options import LocalOptions  # noqa: E402

__all__ = ["LocalBackend", "LocalOptions"]
