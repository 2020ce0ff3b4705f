import binascii
from hmac import compare_digest

from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from knox.auth import TokenAuthentication
from knox.crypto import hash_token
from knox.models import AuthToken
from knox.settings import CONSTANTS
from rest_framework import exceptions

from accounts.models import User


class BearerTokenAuthentication(TokenAuthentication):
    """Knox tokens (stored hashed, with expiry) sent as `Authorization: Bearer <token>`.

    Knox matches the Authorization scheme against `authenticate_header()`, so it
    must stay the bare prefix (`REST_KNOX["AUTH_HEADER_PREFIX"]`, "Bearer"); a
    `realm=` added there made every bearer token be ignored. It is also the
    WWW-Authenticate challenge sent with a 401.

    One query per request: knox's own check also read every other token of the
    user to delete the expired ones, on every request (a second query and a loop,
    a fifth of a turn's CPU under load). Here an expired token is deleted when it
    is presented, and the user's other expired tokens when they sign in again
    (`accounts.services.token_issue`).
    """

    def authenticate_credentials(self, token: bytes) -> tuple[User, AuthToken]:
        invalid = exceptions.AuthenticationFailed(_("Invalid token."))
        try:
            text = token.decode("utf-8")
            digest = hash_token(text)
        except (UnicodeDecodeError, TypeError, binascii.Error) as exc:
            raise invalid from exc
        key = text[: CONSTANTS.TOKEN_KEY_LENGTH]
        for auth_token in AuthToken.objects.filter(token_key=key).select_related("user"):
            if not compare_digest(digest, auth_token.digest):
                continue
            if auth_token.expiry is not None and auth_token.expiry < timezone.now():
                auth_token.delete()
                raise invalid
            return self.validate_user(auth_token)
        raise invalid
