from django.urls import path

from . import views

app_name = "cases"
urlpatterns = [
    path("", views.home, name="home"),
    path("about/", views.about, name="about"),
    path("start/", views.start, name="start"),
    path("home/", views.clinic_home, name="clinic_home"),
    path("learn/<slug:slug>/", views.learn, name="learn"),
    path("patients/", views.patient_list, name="patient_list"),
    path("patients/new/", views.patient_create, name="patient_create"),
    path("patients/<int:pk>/", views.patient_detail, name="patient_detail"),
    path("patients/<int:pk>/eyes/<str:eye>/", views.eye_followup, name="eye_followup"),
    path("patients/<int:pk>/edit/", views.patient_update, name="patient_update"),
    path("patients/<int:patient_pk>/cases/new/", views.case_create, name="case_create"),
    path("cases/<int:pk>/", views.case_detail, name="case_detail"),
    path("cases/<int:pk>/edit/", views.case_update, name="case_update"),
    path("cases/<int:pk>/upload/", views.scan_upload, name="scan_upload"),
    path("cases/<int:pk>/report.pdf", views.case_report, name="case_report"),
    path("cases/<int:pk>/report/sign/", views.case_report_sign, name="case_report_sign"),
    path("scans/<int:pk>/", views.scan_detail, name="scan_detail"),
    path("scans/<int:pk>/image/", views.scan_image, name="scan_image"),
    path("scans/<int:pk>/thumbnail/", views.scan_thumbnail, name="scan_thumbnail"),
    path("scans/<int:pk>/acknowledge/", views.scan_acknowledge, name="scan_acknowledge"),
    path("volumes/<int:pk>/localizer/", views.volume_localizer, name="volume_localizer"),
]
