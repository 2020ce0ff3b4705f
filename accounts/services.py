"""Writes for users and their API tokens."""

from datetime import datetime

from django.contrib.auth import authenticate, password_validation
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from knox.models import AuthToken

from accounts.models import TAKEN, User, username_key


class SignupError(Exception):
    def __init__(self, errors: dict[str, list[str]]):
        super().__init__(errors)
        self.errors = errors


def user_create(*, username: str, password: str, email: str = "") -> User:
    """Create a user with a validated password (billing gives them a wallet as the row is saved)."""
    username = username.strip()
    errors: dict[str, list[str]] = {}
    # The normalized name (NFKC, case-folded) is what must be free: the database enforces the
    # same rule (accounts_user.username_key is unique), this check only words the answer.
    if User.objects.filter(username_key=username_key(username)).exists():
        errors["username"] = [TAKEN]
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
        raise SignupError({"username": [TAKEN]}) from exc
    return user


def token_issue(*, username: str, password: str) -> tuple[str, datetime | None] | None:
    """Return (token, expiry) for valid credentials, or None."""
    user = authenticate(username=username, password=password)
    if user is None or not user.is_active:
        return None
    # Expired tokens are deleted here rather than on every request (accounts.authentication).
    AuthToken.objects.filter(user=user, expiry__lt=timezone.now()).delete()
    instance, token = AuthToken.objects.create(user=user)
    return token, instance.expiry


def token_revoke(*, token: AuthToken) -> None:
    token.delete()


def user_credentials_revoke(*, user: User) -> int:
    """After a password change: delete every API token of `user`; returns how many.

    Called by `User.save()` whenever the password changed, whatever the door. Sessions
    need no work here: each stores a hash of the password, and Django ends any session
    whose hash no longer matches at its next request (the door that changed the
    password keeps its own session with `update_session_auth_hash`).
    """
    deleted, _by_model = AuthToken.objects.filter(user=user).delete()
    return deleted
