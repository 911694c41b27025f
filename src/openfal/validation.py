"""Pydantic validation errors in fal's 422 shape (``{"detail":[{loc,msg,type}]}``), so
every body openfal parses fails the way fal's own endpoints do."""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ValidationError

from openfal.errors import InputInvalid

M = TypeVar("M", bound=BaseModel)


#: deeper than any endpoint's input; Python's own parser and every later walk of the
#: value (pydantic, json.dumps, the database driver) would otherwise hit the recursion limit
MAX_JSON_DEPTH = 64


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not valid JSON")


def loads_strict(raw: str | bytes) -> Any:
    """JSON as RFC 8259 has it, and only what can be stored and answered back: NaN and
    Infinity (Python's extensions), lone surrogates (no UTF-8 for them: the result could
    never be sent), NUL characters (PostgreSQL's text and JSONB refuse them) and nesting
    past ``MAX_JSON_DEPTH`` raise ValueError, so they are a 422 at the door rather than a
    500 (or a database error) later."""
    try:
        value = json.loads(raw, parse_constant=_not_json)
    except RecursionError:
        raise ValueError(f"JSON nested more than {MAX_JSON_DEPTH} levels deep") from None
    check_json_value(value)
    return value


def check_text(text: str) -> str:
    """``text`` if a database and a JSON answer can both hold it, else ValueError."""
    if "\x00" in text:
        raise ValueError("text must not contain NUL (\\u0000) characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must not contain lone UTF-16 surrogates") from None
    return text


def check_json_value(value: Any) -> None:
    """Walk ``value`` (without recursion) checking its depth, strings and keys, and that
    it holds only what JSON can (a value decoded from msgpack may hold bytes or NaN)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            check_text(item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError(f"{item} is not valid JSON")
        elif isinstance(item, bytes | bytearray):
            raise ValueError("binary values have no JSON form: send files as URLs or data URIs")
        elif item is not None and not isinstance(item, (int, dict, list)):
            raise ValueError(f"a {type(item).__name__} value has no JSON form")
        elif isinstance(item, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise ValueError(f"JSON nested more than {MAX_JSON_DEPTH} levels deep")
            if isinstance(item, dict):
                for key, child in item.items():
                    check_text(key)
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)


#: a string openfal stores (names, patterns): no NUL, no lone surrogate
Text = Annotated[str, AfterValidator(check_text)]


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
