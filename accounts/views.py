"""Account pages: sign up, log in, log out. Writes go through `accounts.services`."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.utils.decorators import method_decorator
from django.views.decorators.http import require_http_methods

from accounts import services
from accounts.forms import LoginForm, SignupForm
from pantheon.throttling import throttle_page


@throttle_page("signup")  # the same limit as POST /api/v1/auth/register
@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("rooms")
    if not settings.ALLOW_SIGNUP:
        return render(request, "accounts/signup_closed.html", {"nav": "signup"}, status=403)
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = services.user_create(
                username=form.cleaned_data["username"],
                password=form.cleaned_data["password1"],
                email=form.cleaned_data["email"],
            )
        except services.SignupError as exc:
            form.add_service_errors(exc.errors)
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            return redirect("rooms")
    return render(request, "accounts/signup.html", {"form": form, "nav": "signup"})


@method_decorator(throttle_page("token"), name="dispatch")  # the limit of POST /api/v1/auth/token
class LoginView(auth_views.LoginView):
    template_name = "accounts/login.html"
    authentication_form = LoginForm
    redirect_authenticated_user = True
    extra_context = {"nav": "login"}


class LogoutView(auth_views.LogoutView):
    """POST only (Django 5): a link or prefetch can never sign someone out."""


@method_decorator(throttle_page("token"), name="dispatch")  # it checks the old password: same limit
class PasswordChangeView(auth_views.PasswordChangeView):
    """Django's form; saving it revokes every API token and every other session (accounts.models)."""

    template_name = "accounts/password_change.html"
    success_url = reverse_lazy("rooms")
    extra_context = {"nav": "password"}

    def form_valid(self, form):
        response = super().form_valid(form)  # keeps this session (update_session_auth_hash)
        messages.success(
            self.request, "Password changed. Your other sessions and API tokens were signed out."
        )
        return response
