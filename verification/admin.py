"""Admin views of grades (read-only: grades are append-only) and reviews."""
from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from .models import Grade, Review


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Grade)
class GradeAdmin(ReadOnlyAdmin):
    list_display = ("id", "scan", "volume", "tier", "grader", "decision", "confidence", "created_at", "supersedes")
    list_filter = ("tier", "label", "accepted", "exclusion_reason")
    search_fields = ("=scan__id", "=volume__id", "grader__username")
    list_select_related = ("scan", "volume", "grader", "supersedes")
    date_hierarchy = "created_at"


@admin.register(Review)
class ReviewAdmin(ReadOnlyAdmin):
    list_display = ("scan", "volume", "stage", "final_label", "verified_by", "verified_at", "audit_link")
    list_filter = ("stage", "final_label", "exclusion_reason")
    search_fields = ("=scan__id", "=volume__id")
    list_select_related = ("scan", "volume", "verified_by")

    @admin.display(description="Audit trail")
    def audit_link(self, obj: Review) -> str:
        if not obj.scan_id:  # the per-scan audit page; a volume's entries are in Audit log entries
            return ""
        return format_html('<a href="{}">audit trail</a>', reverse("verification:scan_audit", args=[obj.scan_id]))
