from django.urls import path

from accounts.api import views

urlpatterns = [
    path("register", views.RegisterView.as_view(), name="auth-register"),
    path("token", views.TokenView.as_view(), name="auth-token"),
    path("logout", views.LogoutView.as_view(), name="auth-logout"),
]
