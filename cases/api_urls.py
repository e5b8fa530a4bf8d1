from django.urls import path

from . import api

app_name = "cases-api"
urlpatterns = [
    path("patients/", api.PatientListCreateApi.as_view(), name="patient_list"),
    path("patients/<int:pk>/", api.PatientDetailApi.as_view(), name="patient_detail"),
    path("cases/", api.CaseListCreateApi.as_view(), name="case_list"),
    path("cases/<int:pk>/", api.CaseDetailApi.as_view(), name="case_detail"),
    path("cases/<int:pk>/scans/", api.CaseScanUploadApi.as_view(), name="case_scan_upload"),
    path("cases/<int:pk>/report.pdf", api.CaseReportApi.as_view(), name="case_report"),
    path("cases/<int:pk>/report/", api.CaseReportStateApi.as_view(), name="case_report_state"),
    path("cases/<int:pk>/report/sign/", api.CaseReportSignApi.as_view(), name="case_report_sign"),
    path("scans/", api.ScanListApi.as_view(), name="scan_list"),
    path("scans/<int:pk>/", api.ScanDetailApi.as_view(), name="scan_detail"),
    path("volumes/<int:pk>/", api.VolumeDetailApi.as_view(), name="volume_detail"),
]

