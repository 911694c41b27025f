"""Per-endpoint OpenAPI documents in the shape fal publishes for its models: the
queue operations of one endpoint with its input and output schemas."""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from openfal.endpoints.catalog import EndpointSpec
from openfal.endpoints.ids import app_of

_QUEUE_STATUS = {
    "type": "object",
    "required": ["status", "request_id"],
    "properties": {
        "status": {"type": "string", "enum": ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]},
        "request_id": {"type": "string"},
        "response_url": {"type": "string"},
        "status_url": {"type": "string"},
        "cancel_url": {"type": "string"},
        "queue_position": {"type": "integer"},
        "logs": {"type": ["array", "null"], "items": {"type": "object"}},
        "metrics": {"type": "object"},
        "error": {"type": "string"},
        "error_type": {"type": "string"},
    },
}


def _licence(spec: EndpointSpec) -> dict[str, Any]:
    """OpenAPI's own ``info.license`` plus whether commercial use is allowed."""
    if spec.licence is None:
        return {}
    return {"license": {"name": spec.licence.name, "url": spec.licence.url}, "x-openfal-licence": spec.licence.as_json()}


def endpoint_openapi(spec: EndpointSpec, server_url: str) -> dict[str, Any]:
    (refs, schemas) = models_json_schema(
        [(spec.input_model, "validation"), (spec.output_model, "serialization")],
        ref_template="#/components/schemas/{model}",
    )
    input_ref = refs[(spec.input_model, "validation")]
    output_ref = refs[(spec.output_model, "serialization")]
    components = {**schemas.get("$defs", {}), "QueueStatus": _QUEUE_STATUS}
    request_base = f"/{app_of(spec.endpoint_id)}/requests/{{request_id}}"
    request_id = [{"name": "request_id", "in": "path", "required": True, "schema": {"type": "string"}}]
    status_ref = {"$ref": "#/components/schemas/QueueStatus"}
    return {
        "openapi": "3.1.0",
        "info": {"title": spec.title, "version": "1.0.0", "x-fal-metadata": {"endpointId": spec.endpoint_id}, **_licence(spec)},
        "servers": [{"url": server_url}],
        "components": {"schemas": components, "securitySchemes": {"apiKeyAuth": {"type": "apiKey", "in": "header", "name": "Authorization", "description": "Key <key>"}}},
        "security": [{"apiKeyAuth": []}],
        "paths": {
            f"/{spec.endpoint_id}": {
                "post": {
                    "requestBody": {"required": True, "content": {"application/json": {"schema": input_ref}}},
                    "responses": {"200": {"description": "Queued", "content": {"application/json": {"schema": status_ref}}}},
                }
            },
            f"{request_base}/status": {
                "get": {
                    "parameters": [*request_id, {"name": "logs", "in": "query", "schema": {"type": "number"}}],
                    "responses": {"200": {"description": "Completed", "content": {"application/json": {"schema": status_ref}}}, "202": {"description": "Pending", "content": {"application/json": {"schema": status_ref}}}},
                }
            },
            f"{request_base}/cancel": {
                "put": {"parameters": request_id, "responses": {"202": {"description": "Cancellation requested"}, "400": {"description": "Already completed"}}}
            },
            request_base: {
                "get": {
                    "parameters": request_id,
                    "responses": {"200": {"description": "Result", "content": {"application/json": {"schema": output_ref}}}},
                }
            },
        },
    }
