from django.urls import path

from chat import views

urlpatterns = [
    path("", views.home, name="home"),
    path("rooms/", views.rooms, name="rooms"),
    path("rooms/<int:room_id>/", views.room, name="room"),
    path("rooms/<int:room_id>/turns/<int:turn_id>/", views.room_turn, name="room-turn"),
]
