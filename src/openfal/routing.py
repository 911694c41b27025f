"""Which backend serves an endpoint: the catalog's default, unless a configured route
(``fnmatch`` pattern -> backend name) says otherwise. The most specific pattern wins."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from openfal.endpoints.catalog import CATALOG, EndpointSpec
from openfal.errors import UnknownEndpoint


@dataclass(frozen=True, slots=True)
class Route:
    endpoint_id: str
    backend: str
    #: None when openfal does not know the schema (relayed as-is)
    spec: EndpointSpec | None


class Router:
    """``commercial_only``: endpoints whose weights' licence forbids commercial use are
    not served, unless every model behind them is in ``licensed_models`` (the operator
    bought a licence)."""

    def __init__(
        self, routes: dict[str, str], available: set[str], *, commercial_only: bool = False, licensed_models: frozenset[str] = frozenset()
    ) -> None:
        #: longest pattern first: ``fal-ai/flux-1/*`` beats ``fal-ai/*``
        self.routes = sorted(routes.items(), key=lambda item: (-len(item[0].replace("*", "")), item[0]))
        self.available = available
        self.commercial_only = commercial_only
        self.licensed_models = licensed_models

    def resolve(self, endpoint_id: str) -> Route:
        spec = CATALOG.get(endpoint_id)
        if spec is not None and self.commercial_only and (refusal := self._licence_refusal(spec)) is not None:
            raise UnknownEndpoint(refusal)
        backend = next((b for p, b in self.routes if fnmatchcase(endpoint_id, p)), None)
        if backend is None and spec is not None:
            backend = spec.backend
        if backend is None or backend not in self.available:
            raise UnknownEndpoint(f"Endpoint {endpoint_id} not found")
        if spec is None and backend in {"local", "builtin"}:
            raise UnknownEndpoint(f"Endpoint {endpoint_id} not found")
        return Route(endpoint_id, backend, spec)

    def commercially_usable(self, spec: EndpointSpec | None) -> bool:
        """Whether outputs of the endpoint may be sold: its weights' licence allows it,
        the operator holds a licence for every model behind it, or it runs no model of
        known licence (utilities; endpoints relayed under their provider's terms)."""
        licence = spec.licence if spec is not None else None
        return licence is None or licence.commercial or set(spec.models) <= self.licensed_models  # type: ignore[union-attr]

    def _licence_refusal(self, spec: EndpointSpec) -> str | None:
        licence = spec.licence
        if licence is None or self.commercially_usable(spec):
            return None
        return (
            f"Endpoint {spec.endpoint_id} not found: its weights are under the {licence.name} licence ({licence.url}), "
            f"which does not allow commercial use, and this server serves only commercially usable models"
        )

    def endpoints(self) -> list[Route]:
        """The catalog endpoints this server can serve (for the playground and OpenAPI)."""
        routes = []
        for endpoint_id in CATALOG:
            try:
                routes.append(self.resolve(endpoint_id))
            except UnknownEndpoint:
                continue
        return routes
