"""Writes for users and their API tokens."""

from datetime import datetime

from django.contrib.auth import authenticate, password_validation
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from knox.models import AuthToken

from accounts.models import User


class SignupError(Exception):
    def __init__(self, errors: dict[str, list[str]]):
        super().__init__(errors)
        self.errors = errors


def user_create(*, username: str, password: str, email: str = "") -> User:
    """Create a user with a validated password (billing gives them a wallet as the row is saved)."""
    username = username.strip()
    errors: dict[str, list[str]] = {}
    if User.objects.filter(username__iexact=username).exists():
        errors["username"] = ["A user with that username already exists."]
    candidate = User(username=username, email=email)
    try:
        password_validation.validate_password(password, user=candidate)
    except ValidationError as exc:
        errors["password"] = list(exc.messages)
    if errors:
        raise SignupError(errors)
    try:
        with transaction.atomic():
            user = User.objects.create_user(username=username, password=password, email=email)
    except IntegrityError as exc:
        raise SignupError({"username": ["A user with that username already exists."]}) from exc
    return user


def token_issue(*, username: str, password: str) -> tuple[str, datetime | None] | None:
    """Return (token, expiry) for valid credentials, or None."""
    user = authenticate(username=username, password=password)
    if user is None or not user.is_active:
        return None
    instance, token = AuthToken.objects.create(user=user)
    return token, instance.expiry


def token_revoke(*, token: AuthToken) -> None:
    token.delete()
