"""The signed-in user's API tokens (/account/tokens/): list, create (secret shown once), revoke."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from . import services
from .forms import TokenCreateForm


@login_required
@require_http_methods(["GET", "POST"])
def tokens(request: HttpRequest) -> HttpResponse:
    form = TokenCreateForm(request.POST or None)
    secret = None
    status = 200
    if request.method == "POST":
        if form.is_valid():
            token, secret = services.token_create(user=request.user, **form.cleaned_data)
            form = TokenCreateForm()
            status = 201
        else:
            status = 400
    response = render(
        request, "integrations/tokens.html",
        {"form": form, "secret": secret, "tokens": services.tokens_of(user=request.user)}, status=status,
    )
    return response


@login_required
@require_POST
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    token = services.token_revoke(token_id=pk, by=request.user)
    messages.success(request, f"API token '{token.name}' revoked.")
    return redirect("integrations:tokens")
