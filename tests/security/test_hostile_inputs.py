"""Classes of hostile input that used to answer 500, generated for every endpoint.

Each class is fixed once for every view (pantheon/middleware.py for the URL,
pantheon/parsers.py for JSON bodies, signed cursors for every cursor list),
so each property below walks every operation of the OpenAPI schema (and the
pages, for the URL classes) rather than the one example that was reported:

- a NUL character anywhere in the path or in any query parameter (name or value);
- JSON bodies nested deeper than `MAX_JSON_DEPTH` (arrays, objects, mixed);
- a lone surrogate escape (`"\\ud800"`) in any string or key of a JSON body;
- cursors we did not sign (DRF's own base64 format, random text, another list's
  or another user's cursor) on every cursor-paginated list;
- JSON numbers whose exponent the decimal module cannot hold, on the pricing PATCH.

Every answer must be a 400 JSON body with a message, nothing is written, and
afterwards the server log holds no traceback and no ERROR record.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import quote, urlencode

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.models import CreditTransaction, ModelPricing, PricingChange
from chat import services as chat_services
from chat.models import Room, Turn, UploadedFile
from pantheon.parsers import MAX_JSON_DEPTH
from tests.factories import RoomFactory, UserFactory
from tests.support.logs import assert_no_traceback, recording_logs

PROPERTY = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _operations() -> list[dict]:
    """Every operation of the public schema: method, path template, params, JSON body or not."""
    paths = SchemaGenerator().get_schema(request=None, public=True)["paths"]
    operations = []
    for template, methods in paths.items():
        for method, operation in methods.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            body = operation.get("requestBody", {}).get("content", {})
            operations.append(
                {
                    "method": method.upper(),
                    "path": template,
                    "query": [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"],
                    "json_body": "application/json" in body,
                }
            )
    return operations


OPERATIONS = _operations()
JSON_OPERATIONS = [op for op in OPERATIONS if op["json_body"]]
PAGES = ["/", "/rooms/", "/wallet/", "/usage/", "/login/", "/signup/", "/healthz", "/admin/"]
CURSOR_LISTS = ["/api/v1/rooms/", "/api/v1/rooms/{id}/turns/", "/api/v1/files/"]


@pytest.fixture
def server_log():
    """Every record logged while the test runs; afterwards: no traceback, no ERROR."""
    with recording_logs() as recorder:
        yield recorder
    assert_no_traceback(recorder)


@pytest.fixture
def world(db, settings):
    """A pricing admin with a room, a turn and a file: known ids put every path on its real view."""
    user = UserFactory()
    settings.ADMIN_USER_IDS = [user.pk]
    room = RoomFactory(owner=user, agents=["gpt-4o"])
    uploaded = chat_services.file_upload(
        owner=user, upload=SimpleUploadedFile("notes.csv", b"a,b\n1,2\n", content_type="text/csv")
    )
    chat_services.turn_post(user=user, room_id=room.pk, content="hello")
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return {"user": user, "room": room, "file": uploaded, "client": client}


def _books(user) -> tuple:
    """What a refused request must leave untouched."""
    return (
        Room.objects.count(),
        Turn.objects.count(),
        UploadedFile.objects.count(),
        CreditTransaction.objects.count(),
        PricingChange.objects.count(),
        tuple(ModelPricing.objects.order_by("pk").values_list("multiplier", flat=True)),
    )


def _real_path(template: str, world: dict) -> str:
    return (
        template.replace("{id}", str(world["room"].pk if "rooms" in template else world["file"].pk))
        .replace("{model_alias}", "gpt-4o")
        .replace("{pk}", str(world["room"].pk))
    )


def _assert_400_json(response, *, error: str | None = None) -> dict:
    assert response.status_code == 400, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert body["error"] and body["detail"], body
    if error is not None:
        assert body["error"] == error, body
    return body


def _send(client: Client, method: str, path: str, *, body: str | None = None, query: str = ""):
    url = f"{path}?{query}" if query else path
    if body is None:
        return client.generic(method, url)
    return client.generic(method, url, body.encode("utf-8", "surrogatepass"), content_type="application/json")


# --- NUL in the URL --------------------------------------------------------------------------

text_with_nul = st.builds(
    lambda before, after: f"{before}\x00{after}",
    st.text(max_size=12),
    st.text(max_size=12),
)


@PROPERTY
@given(
    operation=st.sampled_from(OPERATIONS),
    name=st.one_of(st.none(), text_with_nul, st.text(min_size=1, max_size=10)),
    value=text_with_nul,
    nul_in_name=st.booleans(),
)
def test_a_nul_in_any_query_parameter_is_a_400_json_on_every_operation(
    world, server_log, operation, name, value, nul_in_name
):
    documented = operation["query"] or ["q"]
    key = name if name is not None else documented[0]
    params = {value: "x"} if nul_in_name else {key: value}
    before = _books(world["user"])

    response = _send(
        world["client"], operation["method"], _real_path(operation["path"], world), query=urlencode(params)
    )

    assert "Null characters" in _assert_400_json(response, error="bad_request")["detail"]
    assert _books(world["user"]) == before


@PROPERTY
@given(operation=st.sampled_from(OPERATIONS), value=text_with_nul)
def test_a_nul_in_any_path_parameter_is_a_400_json_on_every_operation(world, server_log, operation, value):
    template = operation["path"]
    segment = quote(value, safe="")
    path = template.replace("{id}", segment).replace("{model_alias}", segment)
    if path == template:  # no parameter: put the NUL in the path itself
        path = template.rstrip("/") + "/" + segment
    before = _books(world["user"])

    response = _send(world["client"], operation["method"], path)

    _assert_400_json(response, error="bad_request")
    assert _books(world["user"]) == before


@PROPERTY
@given(page=st.sampled_from(PAGES), value=text_with_nul, in_path=st.booleans())
def test_a_nul_in_a_page_url_is_a_400_page(world, server_log, page, value, in_path):
    url = page.rstrip("/") + "/" + quote(value, safe="") if in_path else f"{page}?{urlencode({'q': value})}"
    response = world["client"].get(url)
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")
    assert b"Null characters" in response.content


# --- JSON bodies: depth and lone surrogates -----------------------------------------------------


def _nested(depth: int, kinds: list[str]) -> str:
    opening = "".join("[" if kinds[i % len(kinds)] == "a" else '{"k":' for i in range(depth))
    closing = "".join("]" if kinds[i % len(kinds)] == "a" else "}" for i in reversed(range(depth)))
    return opening + "1" + closing


@PROPERTY
@given(
    operation=st.sampled_from(JSON_OPERATIONS),
    depth=st.one_of(st.integers(MAX_JSON_DEPTH + 1, 200), st.integers(1_000, 60_000)),
    kinds=st.lists(st.sampled_from("ao"), min_size=1, max_size=3),
    wrapped=st.booleans(),
)
def test_json_nested_too_deep_is_a_400_json_on_every_operation_with_a_body(
    world, server_log, operation, depth, kinds, wrapped
):
    body = _nested(depth, kinds)
    if wrapped:  # inside an otherwise plausible object
        body = '{"content": "hi", "title": "t", "multiplier": "1.5", "extra": ' + body + "}"
    before = _books(world["user"])

    response = _send(world["client"], operation["method"], _real_path(operation["path"], world), body=body)

    assert "nested more than" in _assert_400_json(response, error="parse_error")["detail"]
    assert _books(world["user"]) == before


PLAUSIBLE_BODIES = {
    "/api/v1/auth/register": {"username": "newcomer", "password": "a-long-pass phrase 42"},
    "/api/v1/auth/token": {"username": "someone", "password": "a-long-pass phrase 42"},
    "/api/v1/rooms/": {"title": "a room", "agents": ["gpt-4o"]},
    "/api/v1/rooms/{id}/turns/": {"content": "hello", "model_alias": "gpt-4o"},
    "/api/v1/rooms/{id}/quote": {"content": "hello", "model_alias": "gpt-4o"},
    "/api/v1/rooms/{id}/turns/cancel": {"idempotency_key": "a-key"},
    "/api/v1/admin/pricing/{model_alias}": {"multiplier": "1.5"},
}
surrogate = st.integers(0xD800, 0xDFFF).map(lambda code: f"\\u{code:04x}")


@PROPERTY
@given(
    operation=st.sampled_from(JSON_OPERATIONS),
    escape=surrogate,
    where=st.sampled_from(["value", "key", "list"]),
    prefix=st.text(alphabet="abc xyz", max_size=5),
)
def test_a_lone_surrogate_escape_in_any_json_string_is_a_400_json(
    world, server_log, operation, escape, where, prefix
):
    fields = dict(PLAUSIBLE_BODIES[operation["path"]])
    field = sorted(fields)[0]
    marker = "__SURROGATE__"
    if where == "value":
        fields[field] = prefix + marker
    elif where == "key":
        fields[prefix + marker] = "x"
    else:
        fields["agents"] = ["gpt-4o", prefix + marker]
    body = json.dumps(fields).replace(marker, escape)
    assert escape in body
    before = _books(world["user"])

    response = _send(world["client"], operation["method"], _real_path(operation["path"], world), body=body)

    assert "surrogate" in json.dumps(_assert_400_json(response)["detail"])
    assert _books(world["user"]) == before


def test_a_valid_surrogate_pair_is_an_ordinary_character(world, server_log):
    response = world["client"].post(
        "/api/v1/rooms/", '{"title": "party \\ud83c\\udf89", "agents": ["gpt-4o"]}', "application/json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["title"] == "party 🎉"


# --- cursors -------------------------------------------------------------------------------------

drf_style_cursor = st.builds(
    lambda fields: base64.b64encode(urlencode(fields).encode()).decode(),
    st.dictionaries(
        st.sampled_from(["o", "r", "p", "x"]),
        st.one_of(st.text(max_size=20), st.integers(-(10**30), 10**30).map(str)),
        min_size=1,
        max_size=4,
    ),
)
any_cursor = st.one_of(
    drf_style_cursor,
    st.text(min_size=1, max_size=80).filter(lambda text: "\x00" not in text),
    st.binary(min_size=1, max_size=60).map(lambda raw: base64.urlsafe_b64encode(raw).decode()),
)


@PROPERTY
@given(path=st.sampled_from(CURSOR_LISTS), cursor=any_cursor)
def test_a_cursor_we_did_not_sign_is_a_400_json_on_every_cursor_list(world, server_log, path, cursor):
    response = world["client"].get(_real_path(path, world), {"cursor": cursor})
    assert _assert_400_json(response, error="invalid")["detail"] == {"cursor": ["Invalid cursor."]}


def test_a_signed_cursor_works_only_for_its_user_and_its_list(world, server_log, settings):
    client, user = world["client"], world["user"]
    for index in range(3):
        RoomFactory(owner=user, title=f"extra {index}")
    first = client.get("/api/v1/rooms/", {"page_size": 2}).json()
    cursor = first["next"].split("cursor=")[1].split("&")[0]
    assert client.get(first["next"]).status_code == 200

    other = Client(raise_request_exception=False)
    other.force_login(UserFactory())
    _assert_400_json(other.get(first["next"]))
    _assert_400_json(client.get(f"/api/v1/files/?cursor={cursor}"))


# --- exponents on the pricing PATCH ----------------------------------------------------------------


@PROPERTY
@given(
    mantissa=st.sampled_from(["1", "2.5", "0", "-1", "9.9999"]),
    exponent=st.integers(10**18, 10**40),
    sign=st.sampled_from(["-", "+", ""]),
    letter=st.sampled_from("eE"),
)
def test_a_multiplier_whose_exponent_decimal_cannot_hold_is_a_400_json(
    world, server_log, mantissa, exponent, sign, letter
):
    body = f'{{"multiplier": {mantissa}{letter}{sign}{exponent}}}'
    before = _books(world["user"])
    response = world["client"].patch("/api/v1/admin/pricing/gpt-4o", body, content_type="application/json")
    _assert_400_json(response)
    assert _books(world["user"]) == before


# --- the reported examples, over a real socket, with and without an account -----------------------


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_reported_examples_are_400_json_over_http(live_server, server_log, settings):
    import requests

    user = UserFactory()
    settings.ADMIN_USER_IDS = [user.pk]
    room = RoomFactory(owner=user)
    base = live_server.url
    token = requests.post(
        f"{base}/api/v1/auth/token",
        json={"username": user.username, "password": "correct horse battery staple"},
        timeout=30,
    ).json()["token"]
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    anonymous = {"Content-Type": "application/json"}
    deep = "[" * 50_000 + "]" * 50_000
    cases = [
        ("GET", "/api/v1/users/me/usage?model_alias=a%00b", None, auth),
        ("PATCH", "/api/v1/admin/pricing/gpt%00", '{"multiplier": "1.5"}', auth),
        ("GET", "/api/v1/rooms/?cursor=cD0lMDA%3D", None, auth),  # DRF format, p=%00
        ("GET", f"/api/v1/rooms/{room.pk}/turns/?cursor=cD1hYmM%3D", None, auth),  # p=abc
        ("GET", "/api/v1/files/?cursor=cD05OTk5OTk5OTk5OTk5OTk5OTk5OTk5", None, auth),  # p past bigint
        ("POST", f"/api/v1/rooms/{room.pk}/turns/", '{"content": "\\ud800"}', auth),
        ("POST", f"/api/v1/rooms/{room.pk}/turns/", deep, auth),
        ("POST", "/api/v1/auth/token", deep, anonymous),
        ("POST", "/api/v1/auth/register", deep, anonymous),
        ("POST", "/api/v1/auth/token", '{"username": "\\udfff", "password": "x"}', anonymous),
        ("PATCH", "/api/v1/admin/pricing/gpt-4o", '{"multiplier": 1e-99999999999999999999}', auth),
    ]
    for method, path, body, headers in cases:
        response = requests.request(method, base + path, data=body, headers=headers, timeout=30)
        assert response.status_code == 400, (path, response.status_code, response.text[:200])
        assert response.headers["Content-Type"].startswith("application/json"), path
        assert response.json()["detail"], path
    assert Turn.objects.count() == 0
    assert not PricingChange.objects.exists()
