"""The OpenAI Images API mapped onto openfal's endpoints, free of HTTP.

Chat front-ends and SDKs that make images speak OpenAI's ``/v1/images/generations``
and ``/v1/images/edits``. Each call becomes one ordinary request on openfal's queue
(keys, scopes, quotas, billing, history and webhooks apply unchanged): the OpenAI
parameters become the endpoint's input, the endpoint's output becomes OpenAI's
``{"created", "data": [{"url"} | {"b64_json"}]}``, and errors take OpenAI's shape
``{"error": {message, type, param, code}}``.

Mapping:
* ``model``: an endpoint id, or an alias the operator configures (OpenAI's own model
  names by default); absent, ``dall-e-2`` as OpenAI does.
* ``prompt`` -> ``prompt``; ``n`` -> ``num_images``.
* ``size`` ``WxH`` -> ``image_size {width, height}`` on FLUX endpoints, the nearest
  ``aspect_ratio`` on Kontext; ``auto`` (or none) keeps the endpoint's default.
* ``response_format`` ``url`` (default; ``b64_json`` for ``gpt-image-*`` models, which
  only answer that) or ``b64_json``.
* ``output_format`` ``png``/``jpeg``/``webp`` -> ``output_format`` (``webp`` where the
  endpoint encodes it, e.g. FLUX.2).
* ``quality``, ``style``, ``background``, ``moderation``, ``user``: accepted; FLUX has
  nothing they map onto.
* ``stream: true`` (with ``partial_images`` 0-3): OpenAI's SSE, the run's previews as
  partial images, then the completed images (``b64_json``).
* edits: the image(s) -> ``image_url`` (or ``image_urls`` for several, on the
  endpoint's ``/multi`` twin when it has one); a text-to-image ``model`` with an
  ``/edit`` twin edits there (``fal-ai/flux-2/klein/4b`` -> ``.../4b/edit``); families whose
  edit endpoint has another name are reached through the edit aliases (``qwen-image`` and
  ``fal-ai/qwen-image`` -> Qwen-Image-Edit-2511, ``z-image-turbo`` -> Z-Image Turbo image-to-image). Masks are refused: FLUX Kontext and
  image-to-image edit the whole picture from the prompt."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Any, Literal

from openfal.endpoints.catalog import CATALOG, EndpointSpec
from openfal.errors import ClientError, InputInvalid, OpenfalError
from openfal.validation import check_text

DEFAULT_MODEL = "dall-e-2"
RESPONSE_FORMATS = ("url", "b64_json")
#: OpenAI parameter names for the endpoint fields they became (for error ``param``)
PARAM_OF_FIELD = {"num_images": "n", "image_size": "size", "aspect_ratio": "size", "image_url": "image", "image_urls": "image"}
ASPECT_RATIOS = ("21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21")
_SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")

ErrorType = Literal["invalid_request_error", "authentication_error", "permission_error", "rate_limit_error", "server_error"]


class OpenAIError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(self, status_code: int, message: str, *, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.type = type_
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad(message: str, param: str | None = None, code: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, param=param, code=code)


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """The OpenAI parameters openfal uses, checked."""

    model: str
    prompt: str
    n: int | None
    size: tuple[int, int] | None
    response_format: str
    output_format: str | None
    #: ``stream: true``: SSE of partial images (previews) and the completed images
    stream: bool = False
    partial_images: int = 0


def parse_request(values: dict[str, Any]) -> ImageRequest:
    """OpenAI's parameters from a JSON body or a form, or ``OpenAIError`` (400)."""
    model = _text(values, "model") or DEFAULT_MODEL
    prompt = _text(values, "prompt")
    if not prompt:
        raise bad("'prompt' is a required property", "prompt", "missing_required_parameter")
    for name, value in values.items():
        if isinstance(value, str):  # a form field: the JSON parser checked a body's own
            try:
                check_text(value)
            except ValueError as exc:
                raise bad(f"Invalid '{name}': {exc}", name, "invalid_value") from None
    n = _integer(values, "n")
    if n is not None and n < 1:
        raise bad(f"{n} is less than the minimum of 1 - 'n'", "n", "integer_below_min_value")
    size = _size(values.get("size"))
    default_format = "b64_json" if model.startswith("gpt-image") else "url"
    response_format = _text(values, "response_format") or default_format
    if response_format not in RESPONSE_FORMATS:
        raise bad(f"'{response_format}' is not one of ['url', 'b64_json'] - 'response_format'", "response_format", "invalid_value")
    output_format = _text(values, "output_format")
    if output_format not in (None, "png", "jpeg", "webp"):
        raise bad(f"output_format '{output_format}' is not supported here: use 'png', 'jpeg' or 'webp'", "output_format", "invalid_value")
    stream = values.get("stream", False)
    if isinstance(stream, str):  # a multipart form field
        stream = stream.lower() in {"true", "1"}
    if not isinstance(stream, bool):
        raise bad(f"Invalid type for 'stream': expected a boolean, but got {type(stream).__name__}.", "stream", "invalid_type")
    partial = _integer(values, "partial_images") or 0
    if not 0 <= partial <= 3:
        raise bad(f"{partial} is not between 0 and 3 - 'partial_images'", "partial_images", "invalid_value")
    return ImageRequest(model, prompt, n, size, response_format, output_format, bool(stream), partial)


def _integer(values: dict[str, Any], name: str) -> int | None:
    """An integer parameter: a JSON integer or a form field of digits (``1.5`` or
    ``true`` is refused as OpenAI refuses it, never rounded to 1)."""
    value = values.get(name)
    if value is None:
        return None
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,9}", value.strip()):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise bad(f"Invalid type for '{name}': expected an integer, but got {type(value).__name__}.", name, "invalid_type")


def _text(values: dict[str, Any], name: str) -> str | None:
    value = values.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad(f"Invalid type for '{name}': expected a string, but got {type(value).__name__}.", name, "invalid_type")
    return value


def _size(value: Any) -> tuple[int, int] | None:
    if value is None or value == "auto":
        return None
    match = _SIZE.match(value) if isinstance(value, str) else None
    if not match or not all(0 < int(g) <= 14142 for g in match.groups()):
        raise bad(f"Invalid size {value!r}: use 'auto' or WIDTHxHEIGHT, e.g. '1024x1024'", "size", "invalid_value")
    return int(match.group(1)), int(match.group(2))


def resolve_model(model: str, aliases: dict[str, str]) -> str:
    """The endpoint id ``model`` names (an alias, or an endpoint id itself)."""
    return aliases.get(model, model)


#: what an endpoint openfal has no schema for (a relayed one) is assumed to take: fal's
#: usual names
GENERIC_FIELDS = frozenset({"prompt", "num_images", "image_size", "output_format"})


def _fields(spec: EndpointSpec | None, *, edit: bool = False) -> set[str]:
    if spec is not None:
        return set(spec.input_model.model_fields)
    return set(GENERIC_FIELDS | ({"image_url"} if edit else set()))


def generation_input(endpoint_id: str, request: ImageRequest) -> dict[str, Any]:
    """The endpoint's input for a ``/v1/images/generations`` call."""
    spec = CATALOG.get(endpoint_id)
    fields = _fields(spec)
    if spec is not None and spec.kind != "image":
        raise bad(f"The model '{request.model}' does not generate images", "model", "model_not_supported")
    if "image_url" in fields or "image_urls" in fields:
        raise bad(f"The model '{request.model}' edits images: use /v1/images/edits", "model", "model_not_supported")
    return _common(fields, request)


def edit_endpoint(endpoint_id: str, model: str, images: int) -> str:
    """The endpoint that edits ``images`` images for ``endpoint_id``: itself, its ``/edit``
    twin when it generates from text only (``fal-ai/flux-2`` -> ``fal-ai/flux-2/edit``), or
    its ``/multi`` twin for several images when it takes only one."""
    spec = CATALOG.get(endpoint_id)
    fields = _fields(spec, edit=True)
    if spec is not None and not ({"image_url", "image_urls"} & fields):
        twin = CATALOG.get(f"{endpoint_id}/edit")
        if twin is not None and {"image_url", "image_urls"} & set(twin.input_model.model_fields):
            return edit_endpoint(twin.endpoint_id, model, images)
        raise bad(f"The model '{model}' does not edit images: use an image-to-image or Kontext endpoint", "model", "model_not_supported")
    if images > 1 and "image_urls" not in fields:
        twin = CATALOG.get(f"{endpoint_id}/multi")
        if twin is None or "image_urls" not in twin.input_model.model_fields:
            raise bad(f"The model '{model}' edits one image at a time", "image", "invalid_value")
        return twin.endpoint_id
    return endpoint_id


def edit_input(endpoint_id: str, request: ImageRequest, image_urls: list[str]) -> dict[str, Any]:
    """The endpoint's input for a ``/v1/images/edits`` call whose images are stored at ``image_urls``."""
    fields = _fields(CATALOG.get(endpoint_id), edit=True)
    data = _common(fields, request)
    if "image_urls" in fields and ("image_url" not in fields or len(image_urls) > 1):
        data["image_urls"] = image_urls
    else:
        data["image_url"] = image_urls[0]
    return data


def _common(fields: set[str], request: ImageRequest) -> dict[str, Any]:
    data: dict[str, Any] = {"prompt": request.prompt}
    if request.n is not None:
        data["num_images"] = request.n
    if request.size is not None:
        width, height = request.size
        if "image_size" in fields:
            data["image_size"] = {"width": width, "height": height}
        elif "aspect_ratio" in fields:
            data["aspect_ratio"] = nearest_aspect_ratio(width, height)
    if request.output_format is not None and "output_format" in fields:
        data["output_format"] = request.output_format
    return data


def nearest_aspect_ratio(width: int, height: int) -> str:
    """Kontext's aspect ratio closest to width:height."""

    def distance(ratio: str) -> float:
        w, h = (int(x) for x in ratio.split(":"))
        return abs(w / h - width / height)

    return min(ASPECT_RATIOS, key=distance)


def images_of(output: Any) -> list[dict[str, Any]]:
    """The ``images`` (or the single ``image``) of an endpoint's output."""
    if isinstance(output, dict):
        if isinstance(output.get("images"), list):
            return [i for i in output["images"] if isinstance(i, dict) and isinstance(i.get("url"), str)]
        if isinstance(output.get("image"), dict) and isinstance(output["image"].get("url"), str):
            return [output["image"]]
    return []


def data_uri_bytes(url: str) -> bytes | None:
    """The bytes of a base64 ``data:`` URI (``sync_mode`` outputs), else None."""
    if not url.startswith("data:"):
        return None
    header, _, payload = url.partition(",")
    if not header.endswith(";base64"):
        return None
    return base64.b64decode(payload)


def from_openfal(exc: OpenfalError) -> OpenAIError:
    """An openfal error raised before the run (auth, scope, credit, input, queue)."""
    if isinstance(exc, InputInvalid):
        first = exc.detail[0] if exc.detail else {}
        loc = first.get("loc") or []
        field = str(loc[1]) if len(loc) > 1 else None
        return bad(first.get("msg") or exc.message, PARAM_OF_FIELD.get(field or "", field), first.get("type"))
    status = exc.status_code if isinstance(exc, ClientError) else 500
    return from_status(status, exc.message, getattr(exc, "error_type", None))


def from_result(status_code: int, body: Any) -> OpenAIError:
    """A request that ended with an error (fal's result body) in OpenAI's shape."""
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        loc = detail[0].get("loc") or []
        field = str(loc[1]) if len(loc) > 1 else None
        if status_code == 422:
            return bad(str(detail[0].get("msg")), PARAM_OF_FIELD.get(field or "", field), detail[0].get("type"))
        detail = detail[0].get("msg")
    message = str(detail) if detail else f"The request failed with status {status_code}"
    return from_status(status_code, message, body.get("error_type") if isinstance(body, dict) else None)


def from_status(status: int, message: str, error_type: str | None) -> OpenAIError:
    if status == 422:
        status = 400
    if status == 401:
        return OpenAIError(401, message, code="invalid_api_key")
    if status == 403:
        return OpenAIError(403, message, type_="permission_error", code=error_type)
    if status == 404:
        return OpenAIError(404, message, code="model_not_found")
    if status == 429:
        return OpenAIError(429, message, type_="rate_limit_error", code=error_type or "rate_limit_exceeded")
    if status >= 500 or status < 400:
        return OpenAIError(status if status >= 500 else 500, message, type_="server_error", code=error_type)
    return OpenAIError(status, message, code=error_type)
