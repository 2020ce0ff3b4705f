from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from pantheon import views

api_v1 = [
    path("auth/", include("accounts.api.urls")),
    path("", include("billing.api.urls")),
    path("", include("chat.api.urls")),
]

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("healthz/detail", views.healthz_detail, name="healthz-detail"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start-up script as a file: no inline script (CSP).
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
    # Pages (Django templates).
    path("", include("accounts.urls")),
    path("", include("billing.urls")),
    path("", include("chat.urls")),
]

handler404 = "pantheon.views.not_found"
handler500 = "pantheon.views.server_error"
