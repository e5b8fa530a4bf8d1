from django.urls import path

from . import api

urlpatterns = [
    path("scans/<int:pk>/prediction/", api.ScanPredictionView.as_view(), name="api-scan-prediction"),
    path("scans/<int:pk>/rerun/", api.ScanRerunView.as_view(), name="api-scan-rerun"),
    path("model-versions/", api.ModelVersionListView.as_view(), name="api-model-versions"),
]
