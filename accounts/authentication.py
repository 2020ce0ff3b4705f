import binascii
from collections.abc import Sequence
from functools import cache
from hmac import compare_digest
from typing import TypeVar, cast

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Model
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from knox.auth import TokenAuthentication
from knox.crypto import hash_token
from knox.models import AuthToken
from knox.settings import CONSTANTS
from rest_framework import exceptions

from accounts.models import User

M = TypeVar("M", bound=Model)


class BearerTokenAuthentication(TokenAuthentication):
    """Knox tokens (stored hashed, with expiry) sent as `Authorization: Bearer <token>`.

    Knox matches the Authorization scheme against `authenticate_header()`, so it
    must stay the bare prefix (`REST_KNOX["AUTH_HEADER_PREFIX"]`, "Bearer"); a
    `realm=` added there made every bearer token be ignored. It is also the
    WWW-Authenticate challenge sent with a 401.

    One statement per request, written once: knox's own check also read every
    other token of the user to delete the expired ones, on every request (a
    second query and a loop), and building the ORM query (a join to the user)
    cost 0.7–0.8 ms of CPU per request, three times the statement itself. Here
    an expired token is deleted when it is presented, and the user's other
    expired tokens when they sign in again (`accounts.services.token_issue`).
    """

    def authenticate_credentials(self, token: bytes) -> tuple[User, AuthToken]:
        invalid = exceptions.AuthenticationFailed(_("Invalid token."))
        try:
            text = token.decode("utf-8")
            digest = hash_token(text)
        except (UnicodeDecodeError, TypeError, binascii.Error) as exc:
            raise invalid from exc
        for auth_token in _tokens_with_users(text[: CONSTANTS.TOKEN_KEY_LENGTH]):
            if not compare_digest(digest, auth_token.digest):
                continue
            if auth_token.expiry is not None and auth_token.expiry < timezone.now():
                auth_token.delete()
                raise invalid
            return self.validate_user(auth_token)
        raise invalid


@cache
def _token_statement() -> tuple[str, tuple[Field, ...], tuple[Field, ...]]:
    """The token rows with one key joined to their users: SQL, then the token's and the user's columns."""
    token_fields = tuple(AuthToken._meta.concrete_fields)
    user_fields = tuple(User._meta.concrete_fields)
    quote = connections[DEFAULT_DB_ALIAS].ops.quote_name

    def column(alias: str, field: Field) -> str:
        return f"{alias}.{quote(cast(str, field.column))}"  # a concrete field always has a column

    columns = [column("t", f) for f in token_fields] + [column("u", f) for f in user_fields]
    sql = (
        f"SELECT {', '.join(columns)} FROM {quote(AuthToken._meta.db_table)} t "
        f"JOIN {quote(User._meta.db_table)} u "
        f"ON {column('u', User._meta.pk)} = {column('t', AuthToken._meta.get_field('user'))} "
        f"WHERE {column('t', AuthToken._meta.get_field('token_key'))} = %s"
    )
    return sql, token_fields, user_fields


def _tokens_with_users(key: str) -> list[AuthToken]:
    sql, token_fields, user_fields = _token_statement()
    db = connections[DEFAULT_DB_ALIAS]  # this thread's connection, looked up once
    with db.cursor() as cursor:
        cursor.execute(sql, [key])
        rows = cursor.fetchall()
    found = []
    for row in rows:
        auth_token = _loaded(db, AuthToken, token_fields, row[: len(token_fields)])
        auth_token.user = _loaded(db, User, user_fields, row[len(token_fields) :])
        found.append(auth_token)
    return found


def _loaded(db: BaseDatabaseWrapper, model: type[M], fields: Sequence[Field], values: Sequence[object]) -> M:
    """A model instance from raw column values, converted as the ORM converts them (dates on SQLite)."""
    converted = []
    for field, value in zip(fields, values, strict=True):
        column = field.get_col(model._meta.db_table)
        for converter in db.ops.get_db_converters(column) + field.get_db_converters(db):
            value = converter(value, column, db)
        converted.append(value)
    return model.from_db(db.alias, [f.attname for f in fields], converted)
