"""fal's Platform API (``https://api.fal.ai/v1``) over openfal's own store: the model
catalog with prices, usage line items, analytics, request listings, keys and billing.
Free of HTTP: ``openfal.http.platform_routes`` is the thin layer over these modules."""
