from django.urls import path

from . import views

app_name = "verification"
urlpatterns = [
    path("worklist/<int:tier>/", views.worklist, name="worklist"),
    path("worklist/<int:tier>/next/", views.worklist_next, name="worklist_next"),
    path("scans/<int:pk>/tier/<int:tier>/", views.grade, name="grade"),
    path("volumes/<int:pk>/tier/<int:tier>/", views.grade_volume, name="grade_volume"),
    path("scans/<int:pk>/reference/", views.reference_pick, name="reference_pick"),
    path("grades/<int:grade_id>/correct/", views.grade_correct, name="grade_correct"),
    path("statistics/", views.statistics, name="statistics"),
    path("export/verified.csv", views.export_csv, name="export_csv"),
    path("export/verified.zip", views.export_zip, name="export_zip"),
    path("scans/<int:pk>/audit/", views.scan_audit, name="scan_audit"),
]
