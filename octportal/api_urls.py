"""REST API routes (DRF). Each app contributes its own ``api_urls`` module."""
from django.urls import include, path

from .api import api_root

urlpatterns = [
    path("", api_root, name="api_root"),
    path("", include("cases.api_urls")),
    path("", include("inference.api_urls")),
    path("verification/", include("verification.api_urls")),
]
