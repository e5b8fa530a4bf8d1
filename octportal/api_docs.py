"""The OpenAPI 3 schema of ``/api/v1/`` (drf-spectacular) and its two viewers.

Swagger UI and ReDoc come from drf-spectacular-sidecar (static files, no CDN). Their
pages hold no inline script (Swagger's init script is served by the view itself); ReDoc
injects its styles at run time, so its page alone allows inline style elements.
"""
from __future__ import annotations

from typing import Any

from csp.decorators import csp_update
from django.utils.decorators import method_decorator
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView

from .versioning import API_VERSION

V1_PREFIX = f"/api/{API_VERSION}/"


def only_v1(endpoints: list[tuple[Any, ...]], **kwargs: Any) -> list[tuple[Any, ...]]:
    """Preprocessing hook: the schema documents ``/api/v1/``; the unversioned aliases are not repeated."""
    return [e for e in endpoints if e[0].startswith(V1_PREFIX)]


class ApiSchemaView(SpectacularAPIView):
    pass


class ApiSwaggerView(SpectacularSwaggerSplitView):
    template_name = "api/swagger.html"


@method_decorator(csp_update({"style-src-elem": ["'unsafe-inline'"], "worker-src": ["blob:"]}), name="dispatch")
class ApiRedocView(SpectacularRedocView):
    template_name = "api/redoc.html"
