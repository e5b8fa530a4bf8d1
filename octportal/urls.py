"""Root URL configuration. Each app owns its routes under a namespace."""
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("account/tokens/", include("integrations.urls")),
    path("account/", include("octportal.account")),
    path("", include("cases.urls")),
    path("analysis/", include("inference.urls")),
    path("verification/", include("verification.urls")),
    path("explore/", include("verification.explore_urls")),
    path("api/v1/", include("octportal.api_v1_urls")),
    # The first, unversioned API: aliases of v1 (page-number pages, uploads answer 201).
    path("api/", include("octportal.api_urls")),
]

# JSON under /api/ (and /api/v1/), the templates elsewhere.
handler400 = "octportal.error_views.bad_request"
handler403 = "octportal.error_views.permission_denied"
handler404 = "octportal.error_views.page_not_found"
handler500 = "octportal.error_views.server_error"
