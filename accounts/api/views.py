from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import services
from accounts.api.serializers import (
    RegisterResponseSerializer,
    RegisterSerializer,
    TokenRequestSerializer,
    TokenResponseSerializer,
)
from accounts.authentication import BearerTokenAuthentication
from pantheon.errors import ErrorSerializer


class RegisterView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_scope = "signup"

    @extend_schema(
        request=RegisterSerializer,
        responses={
            201: RegisterResponseSerializer,
            400: ErrorSerializer,
            403: ErrorSerializer,
            429: OpenApiResponse(ErrorSerializer, description="Too many sign-ups; see Retry-After"),
        },
    )
    def post(self, request: Request) -> Response:
        if not settings.ALLOW_SIGNUP:
            raise PermissionDenied("Sign-up is closed.")
        serializer = RegisterSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            user = services.user_create(**serializer.validated_data)
        except services.SignupError as exc:
            raise ValidationError(exc.errors) from exc
        return Response({"id": user.id, "username": user.username}, status=status.HTTP_201_CREATED)


class TokenView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_scope = "token"

    @extend_schema(
        request=TokenRequestSerializer,
        responses={
            200: TokenResponseSerializer,
            400: ErrorSerializer,
            401: ErrorSerializer,
            429: OpenApiResponse(ErrorSerializer, description="Too many attempts; see Retry-After"),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = TokenRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        issued = services.token_issue(**serializer.validated_data)
        if issued is None:
            return Response(
                {"error": "authentication_failed", "detail": "Invalid username or password."},
                status=status.HTTP_401_UNAUTHORIZED,
                headers={"WWW-Authenticate": 'Bearer realm="api"'},
            )
        token, expiry = issued
        return Response({"token": token, "expiry": expiry})


class LogoutView(APIView):
    """Revoke the bearer token used for this request."""

    authentication_classes = [BearerTokenAuthentication]
    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses={204: None, 401: ErrorSerializer})
    def post(self, request: Request) -> Response:
        services.token_revoke(token=request.auth)
        return Response(status=status.HTTP_204_NO_CONTENT)
