"""schemathesis fuzzes the live OpenAPI schema over real HTTP, as a user and as an admin.

The schema is fetched from `/api/schema/` on a live server (a real socket, a
transactional database), every operation a user can call gets a bounded number
of generated requests (valid and invalid), and every response must be non-5xx
and match the schema: a documented status code, content type, headers and
body. Afterwards `reconcile_wallets` must find no drift.

Excluded: `POST /api/v1/auth/logout` only — it revokes the token the fuzzer
authenticates with, so every later request would be a (documented) 401 and
test nothing. Logout is covered in test_access_control.py.
"""

from __future__ import annotations

import functools
from collections import Counter
from decimal import Decimal

import pytest
import schemathesis
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation.value import GeneratedValue
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from billing.models import ModelPricing
from chat import services as chat_services
from tests.factories import DEFAULT_PASSWORD, RoomFactory, UserFactory
from tests.support.clients import token_for
from tests.support.logs import assert_no_traceback, recording_logs

pytestmark = pytest.mark.fuzz
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    ignored_auth,
    negative_data_rejection,
]
FUZZ_SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)


# Nested deeper than pantheon.parsers.MAX_JSON_DEPTH. (Lone surrogates cannot be sent from here:
# schemathesis encodes bodies as UTF-8; tests/security/test_hostile_inputs.py sends the escapes.)
HOSTILE_BODIES = st.one_of(
    st.integers(33, 60).map(lambda depth: functools.reduce(lambda inner, _: [inner], range(depth), 1)),
    st.integers(33, 60).map(lambda depth: functools.reduce(lambda inner, _: {"k": inner}, range(depth), 1)),
)


def _with_nul_parameter(generated):
    """The same query with a NUL appended to its first parameter (or a new one)."""

    def add_nul(query):
        query = dict(query or {})
        name = next(iter(query), "q")
        query[name] = f"{query.get(name, '')}\x00"
        return query

    if isinstance(generated, GeneratedValue):  # schemathesis wraps values with their provenance
        return generated.map_value(add_nul)
    return add_nul(generated)


def _assert_reached(outcomes: Counter, *expected: tuple[str, str, int]) -> None:
    missing = [outcome for outcome in expected if not outcomes[outcome]]
    assert not missing, f"never answered: {missing}; got {sorted(outcomes.items())}"


def _assert_reconciled() -> None:
    try:
        call_command("reconcile_wallets")
    except SystemExit as exc:  # the command exits 1 on drift
        pytest.fail(f"reconcile_wallets exited {exc.code} after fuzzing")


def _known_inputs(user) -> tuple[dict, dict]:
    """Path ids and bodies that are valid for this user, mixed into the generated ones.

    Random ids and strings are almost always a 404 or a 400; these make a share
    of the requests reach the code behind the validation (rooms created, turns
    charged, multipliers changed).
    """
    rooms = [
        RoomFactory(owner=user, agents=["gpt-4o"]),
        RoomFactory(owner=user, agents=["deepseek", "claude-haiku"]),
    ]
    uploaded = chat_services.file_upload(
        owner=user, upload=SimpleUploadedFile("notes.csv", b"a,b\n1,2\n", content_type="text/csv")
    )
    chat_services.turn_post(user=user, room_id=rooms[0].pk, content="hello there")
    room_ids = st.sampled_from([room.pk for room in rooms])
    aliases = sorted(
        ModelPricing.objects.filter(pricing_version__is_active=True).values_list("model_alias", flat=True)
    )
    path_ids = {
        "/api/v1/rooms/{id}/": st.fixed_dictionaries({"id": room_ids}),
        "/api/v1/rooms/{id}/turns/": st.fixed_dictionaries({"id": room_ids}),
        "/api/v1/files/{id}/": st.fixed_dictionaries({"id": st.just(uploaded.pk)}),
        "/api/v1/admin/pricing/{model_alias}": st.fixed_dictionaries(
            {"model_alias": st.sampled_from(aliases)}
        ),
    }
    agents = [alias for alias in aliases if alias != "default"]
    bodies = {
        ("POST", "/api/v1/rooms/"): st.fixed_dictionaries(
            {
                "title": st.text(min_size=1, max_size=40),
                "agents": st.lists(st.sampled_from(agents), min_size=1, max_size=3, unique=True),
            }
        ),
        ("POST", "/api/v1/rooms/{id}/turns/"): st.fixed_dictionaries(
            {"content": st.text(min_size=1, max_size=200)},
            optional={
                "model_alias": st.sampled_from(["gpt-4o", "deepseek", "claude-haiku"]),
                "files": st.just([uploaded.pk]),
            },
        ),
        ("POST", "/api/v1/auth/token"): st.just({"username": user.username, "password": DEFAULT_PASSWORD}),
        ("POST", "/api/v1/auth/register"): st.fixed_dictionaries(
            {
                "username": st.from_regex(r"[a-z][a-z0-9]{9,30}", fullmatch=True),
                "password": st.just("a-long-pass phrase 42"),
            }
        ),
        ("PATCH", "/api/v1/admin/pricing/{model_alias}"): st.fixed_dictionaries(
            {
                "multiplier": st.decimals(
                    min_value=Decimal("0.0001"), max_value=Decimal(100), places=4, allow_nan=False
                ).map(str)
            }
        ),
    }
    return path_ids, bodies


def _live_schema(live_server, settings, *, admin: bool):
    user = UserFactory()
    RoomFactory()  # someone else's room: its id must answer like a missing one
    if admin:
        settings.ADMIN_USER_IDS = [user.pk]
    path_ids, bodies = _known_inputs(user)
    schema = schemathesis.openapi.from_url(
        f"{live_server.url}/api/schema/", headers={"Accept": "application/vnd.oai.openapi+json"}
    )
    token = token_for(user)

    @schema.auth()
    class BearerToken:
        # An auth provider (not fixed headers), so the ignored_auth check can take it off.
        def get(self, case, context):
            return token

        def set(self, case, data, context):
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    @schema.hook("before_generate_path_parameters")
    def _also_known_ids(context, strategy):
        known = path_ids.get(context.operation.path)
        return strategy if known is None else st.one_of(strategy, known)

    @schema.hook("before_generate_body")
    def _also_valid_bodies(context, strategy):
        known = bodies.get((context.operation.method.upper(), context.operation.path))
        strategy = strategy if known is None else st.one_of(strategy, known)
        # Issue 15: bodies nested too deep, mixed into every operation with a body.
        return st.one_of(strategy, HOSTILE_BODIES)

    @schema.hook("before_generate_query")
    def _also_nul_in_query(context, strategy):
        # Reads are where query parameters reach the database (filters, cursors).
        if context.operation.method.upper() != "GET":
            return strategy
        return st.one_of(strategy, strategy.map(_with_nul_parameter))

    return schema


@pytest.fixture
def outcomes() -> Counter:
    """(method, path, status) of every fuzzed response."""
    return Counter()


@pytest.fixture
def user_schema(live_server, settings, outcomes):
    schema = _live_schema(live_server, settings, admin=False)
    with recording_logs() as server_log:
        yield schema
    assert_no_traceback(server_log)
    # The fuzzing reached the code behind validation, not only the 400s and 404s.
    _assert_reached(
        outcomes,
        ("POST", "/api/v1/rooms/{id}/turns/", 201),
        ("POST", "/api/v1/rooms/", 201),
        ("POST", "/api/v1/auth/token", 200),
        ("POST", "/api/v1/auth/register", 201),
        ("GET", "/api/v1/rooms/{id}/turns/", 200),
        ("GET", "/api/v1/files/{id}/", 200),
        ("GET", "/api/v1/users/me/usage", 200),
    )
    _assert_reconciled()


@pytest.fixture
def admin_schema(live_server, settings, outcomes):
    schema = _live_schema(live_server, settings, admin=True)
    with recording_logs() as server_log:
        yield schema
    assert_no_traceback(server_log)
    _assert_reached(
        outcomes,
        ("GET", "/api/v1/admin/pricing", 200),
        ("PATCH", "/api/v1/admin/pricing/{model_alias}", 200),
        ("PATCH", "/api/v1/admin/pricing/{model_alias}", 400),
    )
    _assert_reconciled()


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request):
    # schemathesis 4.32 renames the node through `node._nodeid`, which pytest 9.2 no longer has
    # (it keeps `_id`); give it the attribute so its per-operation reporting works.
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


user_api = schemathesis.pytest.from_fixture("user_schema").exclude(path="/api/v1/auth/logout")
admin_api = schemathesis.pytest.from_fixture("admin_schema").include(path_regex=r"^/api/v1/admin/")


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@user_api.parametrize()
@FUZZ_SETTINGS
def test_every_operation_as_a_user(case, outcomes):
    response = case.call_and_validate(checks=CHECKS)
    outcomes[case.method, case.operation.path, response.status_code] += 1


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@admin_api.parametrize()
@FUZZ_SETTINGS
def test_admin_operations_as_an_admin(case, outcomes):
    response = case.call_and_validate(checks=CHECKS)
    outcomes[case.method, case.operation.path, response.status_code] += 1
