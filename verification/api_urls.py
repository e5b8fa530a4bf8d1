from django.urls import include, path

from . import api

_patterns = [
    path("worklist/<int:tier>/", api.WorklistApi.as_view(), name="worklist"),
    path("scans/<int:pk>/", api.ReviewApi.as_view(), name="review"),
    path("scans/<int:pk>/grades/", api.GradeSubmitApi.as_view(), name="grade_submit"),
]

urlpatterns = [path("", include((_patterns, "verification-api")))]
