"""The licences of the open models openfal serves locally.

A reseller must know, per endpoint, whether the weights behind it may be used
commercially: the catalog states it (``GET /api/endpoints``, each endpoint's OpenAPI),
and ``OPENFAL_COMMERCIAL_ONLY`` serves only the endpoints whose weights allow it.
"Non-commercial" licences (FLUX.1 [dev], FLUX.2 [dev] and [klein] 9B) allow commercial
use of the outputs only under a licence bought from the model's maker: an operator who
holds one says so with ``OPENFAL_LICENSED_MODELS``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Licence:
    #: a short identifier (SPDX where one exists)
    name: str
    url: str
    #: whether serving the model for money is allowed without a separate licence deal
    commercial: bool
    #: what the operator must know beyond the yes/no
    note: str = ""

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "url": self.url, "commercial": self.commercial, "note": self.note}


APACHE_2 = Licence("apache-2.0", "https://www.apache.org/licenses/LICENSE-2.0", True)
FLUX_1_DEV_NON_COMMERCIAL = Licence(
    "flux-1-dev-non-commercial",
    "https://huggingface.co/black-forest-labs/FLUX.1-dev/blob/main/LICENSE.md",
    False,
    "FLUX.1 [dev] Non-Commercial License: commercial serving needs a licence from Black Forest Labs",
)
FLUX_NON_COMMERCIAL = Licence(
    "flux-non-commercial",
    "https://huggingface.co/black-forest-labs/FLUX.2-dev/blob/main/LICENSE.txt",
    False,
    "FLUX Non-Commercial License (FLUX.2 [dev], FLUX.2 [klein] 9B): commercial serving needs a licence from Black Forest Labs",
)
LTXV_OPEN_WEIGHTS = Licence(
    "ltxv-open-weights",
    "https://huggingface.co/Lightricks/LTX-Video/blob/main/LICENSE",
    True,
    "LTX-Video Open Weights License: commercial use allowed below the licence's annual revenue threshold",
)
