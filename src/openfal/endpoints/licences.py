"""The licences model weights come under, as the catalog records them: whether a
customer may use an endpoint's outputs commercially decides which keys may call it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Licence:
    #: an SPDX-like short name: "apache-2.0", "flux-1-dev-non-commercial"
    name: str
    url: str
    #: whether outputs may be used commercially
    commercial: bool
