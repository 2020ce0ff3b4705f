from django.urls import path

from chat.api import views

urlpatterns = [
    path("rooms/", views.RoomListView.as_view(), name="room-list"),
    path("rooms/<int:pk>/", views.RoomDetailView.as_view(), name="room-detail"),
    path("rooms/<int:pk>/turns/", views.TurnListView.as_view(), name="turn-list"),
    path("rooms/<int:pk>/turns/cancel", views.TurnCancelView.as_view(), name="turn-cancel"),
    path("rooms/<int:pk>/quote", views.TurnQuoteView.as_view(), name="turn-quote"),
    path("files/", views.FileListView.as_view(), name="file-list"),
    path("files/<int:pk>/", views.FileDetailView.as_view(), name="file-detail"),
]
