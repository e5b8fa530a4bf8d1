from django.urls import path

from . import api

app_name = "verification-api"
urlpatterns = [
    path("worklist/<int:tier>/", api.WorklistApi.as_view(), name="worklist"),
    path("worklist/<int:tier>/volumes/", api.VolumeWorklistApi.as_view(), name="volume_worklist"),
    path("scans/<int:pk>/", api.ReviewApi.as_view(), name="review"),
    path("volumes/<int:pk>/", api.VolumeReviewApi.as_view(), name="volume_review"),
    path("volumes/<int:pk>/grades/", api.VolumeGradeSubmitApi.as_view(), name="volume_grade_submit"),
    path("scans/<int:pk>/grades/", api.GradeSubmitApi.as_view(), name="grade_submit"),
    path("exports/verified.csv", api.VerifiedExportApi.as_view(), name="export_csv"),
    path("exports/verified.zip", api.VerifiedZipExportApi.as_view(), name="export_zip"),
    path("statistics/", api.StatisticsApi.as_view(), name="statistics"),
]

