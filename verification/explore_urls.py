"""``/explore/``: every scan a user may see, across patients (verification.views.explore)."""
from django.urls import path

from . import views

app_name = "explore"
urlpatterns = [path("", views.explore, name="scans")]
