from django.urls import path

from billing.api import views

urlpatterns = [
    path("users/me/wallet", views.WalletView.as_view(), name="users-me-wallet"),
    path("users/me/holds", views.HoldListView.as_view(), name="users-me-holds"),
    path("users/me/usage", views.UsageListView.as_view(), name="users-me-usage"),
    path("users/me/usage/summary", views.UsageSummaryView.as_view(), name="users-me-usage-summary"),
    path("users/me/transactions", views.TransactionListView.as_view(), name="users-me-transactions"),
    path("admin/pricing", views.AdminPricingListView.as_view(), name="admin-pricing"),
    path(
        "admin/pricing/<str:model_alias>",
        views.AdminPricingDetailView.as_view(),
        name="admin-pricing-detail",
    ),
]
