from knox.auth import TokenAuthentication


class BearerTokenAuthentication(TokenAuthentication):
    """Knox tokens (stored hashed, with expiry) sent as `Authorization: Bearer <token>`.

    Knox matches the Authorization scheme against `authenticate_header()`, so it
    must stay the bare prefix (`REST_KNOX["AUTH_HEADER_PREFIX"]`, "Bearer"); a
    `realm=` added there made every bearer token be ignored. It is also the
    WWW-Authenticate challenge sent with a 401.
    """
