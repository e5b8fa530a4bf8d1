from django.urls import path

from . import views

app_name = "inference"
urlpatterns = [
    path("scans/<int:pk>/status/", views.scan_status, name="scan_status"),
    path("scans/<int:pk>/heatmap.png", views.heatmap, name="heatmap"),
    path("scans/<int:pk>/rerun/", views.scan_rerun, name="scan_rerun"),
    path("cases/<int:pk>/status/", views.case_status, name="case_status"),
]
