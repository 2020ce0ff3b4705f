"""Requests behind a signed-in check, typed as such.

Views that require a user (DRF `IsAuthenticated`, Django `login_required`)
annotate their request with these classes, so `request.user` is a `User`,
not `User | AnonymousUser`, for the type checker. Nothing changes at run time.
"""

from __future__ import annotations

from django.http import HttpRequest
from rest_framework.request import Request

from accounts.models import User


class SignedInRequest(Request):
    user: User


class SignedInHttpRequest(HttpRequest):
    user: User
