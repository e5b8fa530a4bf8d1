from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from .models import ModelVersion, Prediction
from .services import model_version_activate


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "version", "is_active", "short_sha", "created_at"]
    list_filter = ["is_active", "name"]
    readonly_fields = ["name", "version", "sha256", "file_name", "metrics", "card", "is_active", "created_at"]
    actions = ["activate"]

    @admin.display(description="sha256")
    def short_sha(self, obj: ModelVersion) -> str:
        return obj.sha256[:12]

    def has_add_permission(self, request) -> bool:
        return False  # registered from the shipped weights (manage.py register_model)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # predictions reference it

    @admin.action(description="Activate the selected version (used for new analyses and re-runs)")
    def activate(self, request, queryset) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version to activate.", messages.ERROR)
            return
        version = model_version_activate(model_version=queryset.get())
        self.message_user(request, f"{version.label} is now the active version.")


@admin.register(Prediction)
class PredictionAdmin(admin.ModelAdmin):
    list_display = ["id", "scan_id", "model_version", "predicted", "urgency", "confidence", "gate_passed", "created_at"]
    list_filter = ["model_version", "predicted", "urgency", "gate_passed"]
    list_select_related = ["model_version"]
    # Heatmaps are private (no MEDIA_URL): link to the permission-checked view instead
    # (which renders the overlay from the grid on first use).
    exclude = ["heatmap", "heatmap_grid"]
    readonly_fields = [f.name for f in Prediction._meta.fields if f.name not in ("heatmap", "heatmap_grid")] + [
        "heatmap_link"
    ]

    @admin.display(description="heatmap")
    def heatmap_link(self, obj: Prediction) -> str:
        if not obj.heatmap:
            return "—"
        url = reverse("inference:heatmap", args=[obj.scan_id])
        return format_html('<a href="{}">overlay PNG</a>', url)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
