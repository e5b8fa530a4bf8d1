"""Routes of ``/api/v1/`` (URL namespace ``v1``): each app's ``api_urls`` under its own
namespace (``v1:cases-api:...``), the endpoint list, the OpenAPI schema and its viewers."""
from django.urls import include, path

from .api import api_root
from .api_docs import ApiRedocView, ApiSchemaView, ApiSwaggerView

app_name = "v1"
urlpatterns = [
    path("", api_root, name="root"),
    path("schema/", ApiSchemaView.as_view(), name="schema"),
    path("docs/", ApiSwaggerView.as_view(url_name="v1:schema"), name="swagger"),
    path("redoc/", ApiRedocView.as_view(url_name="v1:schema"), name="redoc"),
    path("", include("cases.api_urls")),
    path("", include("inference.api_urls")),
    path("verification/", include("verification.api_urls")),
]
