"""Per-endpoint bounds on what the models read, checked at submit (a 422, nothing queued)
before the input is validated further.

Prompts: a prompt is tokenized on the worker before the first denoising step, where no
cancel reaches it, and tokenizing costs CPU in proportion to its length (a 2 MiB prompt
took 18.6 s, and a cancel waited for all of it). FLUX reads at most
``max_sequence_length`` T5 tokens (512 on [dev] and Kontext, 256 on [schnell]: about
2,000 characters of English) and 77 CLIP tokens; the rest is truncated. fal publishes no
maximum length for the prompts of the endpoints openfal serves, so each gets
``DEFAULT_MAX_PROMPT_CHARS``, several times what any of them reads, unless ``LIMITS``
names another for it (an endpoint id or an fnmatch pattern; the most specific match
wins). A prompt at the limit tokenizes in tens of milliseconds, so a cancel during
tokenization takes effect that soon, at the first step's callback.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

from openfal.errors import InputInvalid

DEFAULT_MAX_PROMPT_CHARS = 10_000
#: endpoint id or pattern -> maximum characters of each prompt field (fal's own limits
#: where it documents one; none of the served endpoints has one today)
LIMITS: dict[str, int] = {}
#: the input fields that are prompts
PROMPT_FIELDS = ("prompt", "negative_prompt")


def max_prompt_chars(endpoint_id: str) -> int:
    """The longest prompt ``endpoint_id`` accepts, in characters."""
    if endpoint_id in LIMITS:
        return LIMITS[endpoint_id]
    matches = [pattern for pattern in LIMITS if fnmatchcase(endpoint_id, pattern)]
    if matches:
        return LIMITS[max(matches, key=len)]
    return DEFAULT_MAX_PROMPT_CHARS


def check_prompts(endpoint_id: str, body: Any) -> None:
    """``InputInvalid`` (pydantic's ``string_too_long`` shape) for a prompt past the
    endpoint's limit; anything else is the schema's to judge."""
    if not isinstance(body, dict):
        return
    limit = max_prompt_chars(endpoint_id)
    detail = [
        {
            "loc": ["body", name],
            "msg": f"String should have at most {limit} characters",
            "type": "string_too_long",
            "ctx": {"max_length": limit},
        }
        for name in PROMPT_FIELDS
        if isinstance(body.get(name), str) and len(body[name]) > limit
    ]
    if detail:
        raise InputInvalid(detail)
