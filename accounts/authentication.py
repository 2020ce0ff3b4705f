from knox.auth import TokenAuthentication


class BearerTokenAuthentication(TokenAuthentication):
    """Knox tokens (stored hashed, with expiry) sent as `Authorization: Bearer <token>`."""

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'
