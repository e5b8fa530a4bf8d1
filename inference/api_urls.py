from django.urls import path

from . import api

app_name = "inference-api"
urlpatterns = [
    path("scans/<int:pk>/prediction/", api.ScanPredictionApi.as_view(), name="scan_prediction"),
    path("scans/<int:pk>/reading/", api.ScanPredictionApi.as_view(), name="scan_reading"),
    path("scans/<int:pk>/rerun/", api.ScanRerunApi.as_view(), name="scan_rerun"),
    path("volumes/<int:pk>/reading/", api.VolumeReadingApi.as_view(), name="volume_reading"),
    path("model-versions/", api.ModelVersionListApi.as_view(), name="model_version_list"),
]

