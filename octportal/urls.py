"""Root URL configuration. Each app owns its routes under a namespace."""
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("cases.urls")),
    path("analysis/", include("inference.urls")),
    path("verification/", include("verification.urls")),
    path("explore/", include("verification.explore_urls")),
    path("api/", include("octportal.api_urls")),
]
