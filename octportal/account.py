"""The signed-in user's own page: session facts and "sign out everywhere"."""
from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.views.decorators.http import require_GET, require_POST

from .security import user_sessions_end


@login_required
@require_GET
def account(request: HttpRequest) -> HttpResponse:
    context = {
        "session_expires": request.session.get_expiry_date(),
        "expire_at_browser_close": settings.SESSION_EXPIRE_AT_BROWSER_CLOSE,
    }
    return render(request, "account/account.html", context)


@login_required
@require_POST
def sign_out_everywhere(request: HttpRequest) -> HttpResponse:
    ended = user_sessions_end(user=request.user)
    logout(request)
    messages.success(request, f"Signed out everywhere: {ended} session(s) ended and your API token revoked.")
    return redirect(settings.LOGIN_URL)


app_name = "account"
urlpatterns = [
    path("", account, name="account"),
    path("sign-out-everywhere/", sign_out_everywhere, name="sign_out_everywhere"),
]
