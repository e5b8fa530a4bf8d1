from django.contrib import admin, messages

from . import services
from .models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "scope", "created_at", "expires_at", "last_used_at", "revoked_at"]
    list_filter = ["scope", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "user__username", "prefix"]
    readonly_fields = ["user", "prefix", "scope", "created_at", "expires_at", "last_used_at", "revoked_at", "revoked_by"]
    fields = ["name", *readonly_fields]
    actions = ["revoke"]

    def has_add_permission(self, request) -> bool:
        return False  # created by their owners on the account page (the secret is shown once)

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request, queryset) -> None:
        # Through the service, one row at a time, so that each revocation is in the audit.
        live = list(queryset.filter(revoked_at__isnull=True).values_list("pk", flat=True))
        for pk in live:
            services.token_revoke(token_id=pk, by=request.user)
        count = len(live)
        self.message_user(request, f"{count} token(s) revoked.", messages.SUCCESS)
