"""Every endpoint openfal serves that fal's 2026 type definitions list
(``shared/spec/fal-endpoints-2026.md``) has fal's exact input fields: the same names,
the same required ones, the same defaults and the same enumerations.

The spec file sits beside the repository (``../shared/spec``), as on CI and the team's
machines; a clone without it skips these tests rather than guessing fal's tables.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from openfal.endpoints.catalog import CATALOG

SPEC = Path(__file__).resolve().parents[2] / "shared" / "spec" / "fal-endpoints-2026.md"
_HEADING = re.compile(r"^### (\S+)\ninput `(\w+)`", re.M)
_ROW = re.compile(r"^\| (\w+)( \*)? \| (.*?) \| (.*?) \|$")


def _tables(text: str) -> dict[str, dict[str, tuple[bool, str, str]]]:
    """type name -> field -> (required, type text, default text)."""
    tables: dict[str, dict[str, tuple[bool, str, str]]] = {}
    for block in text.split("\n`")[1:]:
        name, _, body = block.partition("`\n")
        rows = {}
        for line in body.splitlines():
            match = _ROW.match(line)
            if match and match.group(1) != "field":
                rows[match.group(1)] = (bool(match.group(2)), match.group(3).strip(), match.group(4).strip())
            elif line.startswith("#"):
                break
        tables[name] = rows
    return tables


def _endpoints() -> dict[str, dict[str, tuple[bool, str, str]]]:
    if not SPEC.is_file():
        return {}
    text = SPEC.read_text()
    tables = _tables(text)
    return {endpoint: tables[input_type] for endpoint, input_type in _HEADING.findall(text) if endpoint in CATALOG}


ENDPOINTS = _endpoints()
pytestmark = pytest.mark.skipif(not SPEC.is_file(), reason=f"{SPEC} is not beside this clone")


def _value(text: str) -> Any:
    """A default as the spec writes it: "quoted", number, true/false or a bare word."""
    if text.startswith('"') and text.endswith('"'):
        return text[1:-1]
    if text in ("true", "false"):
        return text == "true"
    try:
        return float(text)
    except ValueError:
        return text


def _choices(type_text: str) -> set[str] | None:
    """The values of an enumeration whose every option is quoted, else None."""
    parts = [p.strip() for p in type_text.split(" / ")]
    if len(parts) < 2 or not all(p.startswith('"') and p.endswith('"') for p in parts):
        return None
    return {p[1:-1] for p in parts}


def _literal_values(annotation: Any) -> set[str] | None:
    if typing.get_origin(annotation) is typing.Literal:
        return set(typing.get_args(annotation))
    values = [_literal_values(arg) for arg in typing.get_args(annotation)]
    found = [v for v in values if v]
    return set().union(*found) if found else None


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_the_input_has_fals_fields_required_fields_and_defaults(endpoint: str) -> None:
    model: type[BaseModel] = CATALOG[endpoint].input_model
    for field, (required, type_text, default) in ENDPOINTS[endpoint].items():
        assert field in model.model_fields, f"{endpoint}: fal's field {field} is missing"
        info = model.model_fields[field]
        assert info.is_required() == required, f"{endpoint}.{field}: required is {info.is_required()}, fal says {required}"
        if default:
            ours = info.default
            expected = _value(default)
            assert ours is not PydanticUndefined and (ours == expected or str(ours) == str(expected)), (
                f"{endpoint}.{field}: default {ours!r}, fal's is {expected!r}"
            )
        choices = _choices(type_text)
        if choices is not None:
            assert _literal_values(info.annotation) == choices, f"{endpoint}.{field}: choices differ from fal's {sorted(choices)}"


def test_the_spec_tables_were_read() -> None:
    """The parser found the endpoints openfal serves from the spec (a format change in
    the spec file must not silently skip every check)."""
    assert "fal-ai/flux/krea" in ENDPOINTS and "prompt" in ENDPOINTS["fal-ai/flux/krea"]
