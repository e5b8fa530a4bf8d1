from django.urls import path

from . import api

urlpatterns = [
    path("worklist/<int:tier>/", api.WorklistApi.as_view(), name="verification-api-worklist"),
    path("scans/<int:pk>/", api.ReviewApi.as_view(), name="verification-api-review"),
    path("scans/<int:pk>/grades/", api.GradeSubmitApi.as_view(), name="verification-api-grade-submit"),
]
