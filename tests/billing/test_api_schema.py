"""OpenAPI for the billing endpoints: complete, valid, warning-free; Swagger UI served offline."""

import re

import pytest
from django.urls import include, path
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema
from rest_framework.test import APIClient

BILLING_PATHS = {
    "/api/v1/users/me/wallet": ("get", set()),
    "/api/v1/users/me/holds": ("get", set()),
    "/api/v1/users/me/usage": ("get", {"model_alias", "since", "until", "cursor", "page_size", "format"}),
    "/api/v1/users/me/usage/summary": ("get", {"group_by", "model_alias", "since", "until"}),
    "/api/v1/users/me/transactions": ("get", {"cursor", "page_size"}),
    "/api/v1/admin/pricing": ("get", set()),
    "/api/v1/admin/pricing/{model_alias}": ("patch", {"model_alias"}),
}


def billing_schema() -> dict:
    GENERATOR_STATS.reset()
    patterns = [path("api/v1/", include("billing.api.urls"))]
    schema = SchemaGenerator(patterns=patterns).get_schema(request=None, public=True)
    assert not GENERATOR_STATS, (
        f"warnings: {dict(GENERATOR_STATS._warn_cache)} errors: {dict(GENERATOR_STATS._error_cache)}"
    )
    return schema


def test_billing_schema_is_valid_and_warning_free():
    schema = billing_schema()
    validate_schema(schema)
    assert set(schema["paths"]) == set(BILLING_PATHS)
    for url, (method, params) in BILLING_PATHS.items():
        operation = schema["paths"][url][method]
        assert {p["name"] for p in operation.get("parameters", [])} == params, url
        assert "Error" in str(operation["responses"]["401"]), url


def test_shapes_and_errors_are_described():
    schema = billing_schema()
    components = schema["components"]["schemas"]
    usage = schema["paths"]["/api/v1/users/me/usage"]["get"]
    assert set(usage["responses"]["200"]["content"]) == {"application/json", "text/csv"}
    assert set(usage["responses"]) == {"200", "400", "401", "503"}  # 503: database unavailable
    assert list(components["UsageRow"]["properties"]) == [
        "id", "created_at", "room", "turn", "turn_status", "turn_routed_by", "model_alias", "provider_model",
        "purpose",
        "input_tokens",
        "output_tokens", "multiplier", "pricing_version", "credits_burned", "metered", "usage_source",
        "cached_input_tokens", "reasoning_tokens", "latency_ms",
    ]  # fmt: skip
    assert components["UsageRow"]["properties"]["credits_burned"]["type"] == "string"
    assert set(components["Wallet"]["properties"]) == {
        "balance",
        "held",
        "available",
        "lifetime_granted",
        "lifetime_burned",
        "updated_at",
    }
    patch = schema["paths"]["/api/v1/admin/pricing/{model_alias}"]["patch"]
    assert set(patch["responses"]) == {"200", "400", "401", "403", "404", "413", "503"}  # 413: body limit
    body = patch["requestBody"]["content"]["application/json"]["schema"]
    assert list(body["properties"]) == ["multiplier"]
    assert body["required"] == ["multiplier"]
    assert body["additionalProperties"] is False
    listing = schema["paths"]["/api/v1/admin/pricing"]["get"]
    assert set(listing["responses"]) == {"200", "400", "401", "403", "503"}  # 400: a NUL in the URL


@pytest.mark.django_db
def test_schema_endpoint_serves_the_billing_paths():
    response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert set(BILLING_PATHS) <= set(paths)


@pytest.mark.django_db
def test_swagger_ui_is_served_from_our_own_static_files():
    client = APIClient()
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert not re.search(r"https?://(?!127\.0\.0\.1)", html.replace("http://testserver", "")), "a CDN URL"
    assets = re.findall(r'"(/static/drf_spectacular_sidecar/[^"]+)"', html)
    assert any(asset.endswith("swagger-ui-bundle.js") for asset in assets), html
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200, asset
        b"".join(response.streaming_content) if response.streaming else response.content
