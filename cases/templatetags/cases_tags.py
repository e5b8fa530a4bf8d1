"""Small display helpers for the cases templates."""
from __future__ import annotations

from django import template

from cases.images import human_size
from cases.roles import Role

register = template.Library()


@register.filter
def role_label(name: str) -> str:
    """``clinic_staff`` -> ``Clinic staff``."""
    try:
        return Role(name).label
    except ValueError:
        return name


@register.filter
def filesize(n: int | None) -> str:
    return human_size(int(n or 0))
