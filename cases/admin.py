"""Django admin for clinical records: for corrections and oversight.

Scans are added only through the upload service (validation, conversion, analysis),
so the admin shows them read-only and cannot add them.
"""
from __future__ import annotations

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from .models import Case, Patient, Scan, Volume

SCAN_READONLY = (
    "uid", "case", "original_file", "image_file", "sha256", "original_name", "format", "original_mode", "file_size",
    "width", "height", "status", "status_detail", "status_changed_at", "analysis_attempts", "uploaded_by",
    "uploaded_at",
)


class CaseInline(admin.TabularInline):
    model = Case
    extra = 0
    fields = ("exam_date", "eye", "device", "referring_clinician", "status")
    show_change_link = True


class ScanInline(admin.TabularInline):
    model = Scan
    extra = 0
    fields = ("original_name", "format", "width", "height", "status", "uploaded_at", "image_link")
    readonly_fields = fields
    show_change_link = True
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description="Image")
    def image_link(self, obj: Scan) -> str:
        if not obj.pk:
            return "—"
        return format_html('<a href="{}" target="_blank" rel="noopener">view</a>', reverse("cases:scan_image", args=[obj.pk]))


@admin.register(Patient)
class PatientAdmin(admin.ModelAdmin):
    list_display = ("identifier", "sex", "birth_year", "case_count", "created_by", "created_at")
    list_filter = ("sex", "created_at")
    search_fields = ("identifier",)
    readonly_fields = ("created_by", "created_at", "updated_at")
    inlines = [CaseInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Patient]:
        return super().get_queryset(request).select_related("created_by").annotate(_case_count=Count("cases"))

    @admin.display(description="Examinations", ordering="_case_count")
    def case_count(self, obj: Patient) -> int:
        return obj._case_count


@admin.register(Case)
class CaseAdmin(admin.ModelAdmin):
    list_display = ("id", "patient", "eye", "exam_date", "device", "referring_clinician", "status", "scan_count")
    list_filter = ("status", "eye", "exam_date", "device")
    search_fields = ("patient__identifier", "device", "referring_clinician", "notes")
    date_hierarchy = "exam_date"
    list_select_related = ("patient",)
    autocomplete_fields = ("patient",)
    readonly_fields = ("created_by", "created_at", "updated_at")
    inlines = [ScanInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Case]:
        return super().get_queryset(request).annotate(_scan_count=Count("scans"))

    @admin.display(description="Scans", ordering="_scan_count")
    def scan_count(self, obj: Case) -> int:
        return obj._scan_count


@admin.register(Scan)
class ScanAdmin(admin.ModelAdmin):
    list_display = ("id", "original_name", "patient", "case", "format", "original_mode", "dimensions", "status", "source_label", "uploaded_at")
    list_filter = ("status", "format", "original_mode", "source_label", "uploaded_at")
    search_fields = ("original_name", "sha256", "case__patient__identifier", "uid")
    list_select_related = ("case__patient",)
    date_hierarchy = "uploaded_at"
    readonly_fields = SCAN_READONLY
    fields = SCAN_READONLY + ("source_label", "source_label_origin")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="Patient", ordering="case__patient__identifier")
    def patient(self, obj: Scan) -> str:
        return obj.case.patient.identifier

    # FileField's own widget links to MEDIA_URL, which deliberately does not exist.
    @admin.display(description="Original file")
    def original_file(self, obj: Scan) -> str:
        if not obj.original:
            return "not kept (OCT_KEEP_UPLOADED_FILES is off)"
        url = reverse("cases:scan_image", args=[obj.pk]) + "?original=1"
        return format_html('{} (<a href="{}">download</a>)', obj.original.name, url)

    @admin.display(description="Converted image")
    def image_file(self, obj: Scan) -> str:
        url = reverse("cases:scan_image", args=[obj.pk])
        return format_html('{} (<a href="{}" target="_blank" rel="noopener">view</a>)', obj.image.name, url)

    @admin.display(description="Size")
    def dimensions(self, obj: Scan) -> str:
        return f"{obj.width}×{obj.height}"


@admin.register(Volume)
class VolumeAdmin(admin.ModelAdmin):
    """Read-only: volumes come in only through intake (upload, API, import, receiver)."""

    list_display = ("id", "case", "source_format", "laterality", "slice_count", "acquisition_date", "uploaded_at")
    list_filter = ("source_format", "laterality", "uploaded_at")
    search_fields = ("case__patient__identifier", "original_name", "uid")
    list_select_related = ("case__patient",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Volume | None = None) -> bool:
        return False
