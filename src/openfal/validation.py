"""Pydantic validation errors in fal's 422 shape (``{"detail":[{loc,msg,type}]}``), so
every body openfal parses fails the way fal's own endpoints do."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from openfal.errors import InputInvalid

M = TypeVar("M", bound=BaseModel)


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not valid JSON")


def loads_strict(raw: str | bytes) -> Any:
    """JSON as RFC 8259 has it: Python's NaN/Infinity extensions raise ValueError, since
    a value holding them could not be answered back as JSON later."""
    return json.loads(raw, parse_constant=_not_json)


def parse_body(model: type[M], body: Any) -> M:
    """``body`` as ``model``, or ``InputInvalid`` with fal's detail list."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise InputInvalid(fal_detail(exc)) from None


def fal_detail(exc: ValidationError) -> list[dict[str, Any]]:
    detail = []
    for error in exc.errors(include_url=False):
        item: dict[str, Any] = {
            "loc": ["body", *error["loc"]],
            "msg": error["msg"],
            "type": error["type"],
        }
        if "ctx" in error:
            item["ctx"] = {k: v if isinstance(v, (int, float, str, bool, list)) else str(v) for k, v in error["ctx"].items()}
        detail.append(item)
    return detail
