"""The import order of ``src/openfal``, highest layer first: a module may import from its
own layer and the layers below it, never from one above. Read off the imports as they
are (no cycles, no upward imports); this test keeps it so. A new module is placed in
``LAYERS`` on purpose: one that is in none fails the test, naming itself."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

#: (layer, module prefixes): a module belongs to the layer of its longest matching prefix
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("entry points", ("openfal.__main__", "openfal.cli")),
    ("http", ("openfal.http",)),
    ("runtime: the wiring", ("openfal.runtime",)),
    ("worker: slot supervision", ("openfal.worker", "openfal.gpu_workers")),
    ("queue operations", ("openfal.service", "openfal.attempt", "openfal.reaper")),
    ("endings and administration", ("openfal.endings", "openfal.key_admin", "openfal.platform_api")),
    # the catalog is derived from the local backend's model families, so it sits above them
    ("domain rules", ("openfal.accounting", "openfal.routing", "openfal.openai_images", "openfal.endpoints.catalog", "openfal.pools")),
    ("backends and outbound calls", ("openfal.backends.local", "openfal.backends.relay", "openfal.webhooks", "openfal.auth", "openfal.uploads")),
    ("store", ("openfal.store", "openfal.fetch")),
    (
        "media and the backend contract",
        ("openfal.media", "openfal.backends", "openfal.metrics", "openfal.notify", "openfal.realtime", "openfal.validation"),
    ),
    (
        "plain values",
        (
            "openfal",  # the package itself: __version__
            "openfal.endpoints",  # schemas, ids, licences
            "openfal.config",
            "openfal.errors",
            "openfal.events",
            "openfal.models",
            "openfal.aio",
            "openfal.backoff",
            "openfal.netguard",
            "openfal.signed_claims",
            "openfal.loghist",
            "openfal.log_redaction",
        ),
    ),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int | None:
    """The index of ``module``'s layer (0 is the highest), or None when it has none."""
    best: tuple[int, int] | None = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            # "openfal" is the package's own __init__ only, not a catch-all for what is unplaced
            covers = module == prefix or (prefix != "openfal" and module.startswith(prefix + "."))
            if covers and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    return None if best is None else best[1]


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The openfal modules ``path`` imports, at module level or inside functions alike."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("openfal"):
            names = {f"{node.module}.{alias.name}" for alias in node.names} & known
            found |= names or {node.module}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("openfal")}
    return found


def upward_imports(imports: dict[str, set[str]]) -> list[str]:
    """Every import of a module from a layer above its own, said in words."""
    problems = []
    for module, targets in sorted(imports.items()):
        here = layer_of(module)
        for target in sorted(targets):
            there = layer_of(target)
            if here is not None and there is not None and there < here:
                problems.append(f"{module} ({LAYERS[here][0]}) imports {target} ({LAYERS[there][0]}, above it)")
    return problems


def project_imports() -> dict[str, set[str]]:
    files = {module_name(p): p for p in (SRC / "openfal").rglob("*.py") if "migrations" not in p.parts}
    return {module: imports_of(path, set(files)) for module, path in files.items()}


def test_every_module_has_a_layer() -> None:
    assert [m for m in project_imports() if layer_of(m) is None] == []


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    assert upward_imports(project_imports()) == []


def test_an_upward_import_is_found() -> None:
    """The check itself: the store reaching into http, or plain values into the store, is named."""
    assert upward_imports({"openfal.store.requests": {"openfal.http.deps", "openfal.models"}}) == [
        "openfal.store.requests (store) imports openfal.http.deps (http, above it)"
    ]
    assert upward_imports({"openfal.models": {"openfal.store.db"}}) == [
        "openfal.models (plain values) imports openfal.store.db (store, above it)"
    ]
    assert layer_of("openfal.brand_new") is None and layer_of("openfal") is not None
