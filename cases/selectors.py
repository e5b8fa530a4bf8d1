"""Read-side queries of clinical records, scoped to the user.

Access rules live here once:

* clinic staff (and admins) see patients, cases and scans;
* graders of every tier may fetch scan images (they grade them) but not the
  patient and case pages;
* anyone else gets ``Forbidden``; an unknown id gets ``NotFound``.

The role is checked before the lookup, so a refused user learns nothing about
which ids exist.
"""
from __future__ import annotations

from typing import Any

from django.db import connection
from django.db.models import Count, Max, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce

from octportal.errors import Forbidden, NotFound

from .models import Acknowledgement, Case, Patient, Scan, Volume
from .roles import GRADER_ROLES, Role, has_role

RECORD_ROLES: tuple[str, ...] = (Role.CLINICIAN,)
IMAGE_ROLES: tuple[str, ...] = (Role.CLINICIAN, *GRADER_ROLES)

RECORDS_FORBIDDEN = "Only clinic staff can see patient records."
IMAGES_FORBIDDEN = "Your role does not give access to scan images."


def may_see_records(*, user: Any) -> bool:
    return has_role(user, *RECORD_ROLES)


def may_see_images(*, user: Any) -> bool:
    return has_role(user, *IMAGE_ROLES)


def _require_records(user: Any) -> None:
    if not may_see_records(user=user):
        raise Forbidden(RECORDS_FORBIDDEN)


def _scans_qs() -> QuerySet[Scan]:
    return Scan.objects.select_related("uploaded_by")


def patient_list(*, user: Any, query: str = "") -> QuerySet[Patient]:
    """Patients matching ``query`` (part of the identifier), by identifier; annotate the
    rows shown with ``patients_counted``."""
    _require_records(user)
    qs = Patient.objects.all()
    query = (query or "").strip()
    if query:
        qs = qs.filter(identifier__icontains=query)
    return qs.order_by("identifier")


def patients_counted(qs: QuerySet[Patient]) -> QuerySet[Patient]:
    """Patients with ``case_count`` and ``last_exam`` (per row, for a page of them)."""
    cases = Case.objects.filter(patient=OuterRef("pk")).order_by().values("patient")
    return qs.annotate(
        case_count=Coalesce(Subquery(cases.annotate(n=Count("pk")).values("n")[:1]), 0),
        last_exam=Subquery(cases.annotate(m=Max("exam_date")).values("m")[:1]),
    )


def patient_get(*, user: Any, patient_id: int) -> Patient:
    """One patient with their cases (each annotated with ``scan_count``)."""
    _require_records(user)
    cases = Case.objects.annotate(scan_count=Count("scans")).order_by("-exam_date", "-id")
    try:
        return Patient.objects.select_related("created_by").prefetch_related(Prefetch("cases", queryset=cases)).get(
            pk=patient_id
        )
    except Patient.DoesNotExist:
        raise NotFound(f"There is no patient #{patient_id}.") from None


def case_list(*, user: Any, patient_id: int | None = None) -> QuerySet[Case]:
    """Cases, newest examination first, optionally of one patient."""
    _require_records(user)
    qs = Case.objects.select_related("patient").annotate(scan_count=Count("scans"))
    if patient_id is not None:
        qs = qs.filter(patient_id=patient_id)
    return qs.order_by("-exam_date", "-id")


def case_get(*, user: Any, case_id: int) -> Case:
    """One case with its patient and its scans (in upload order)."""
    _require_records(user)
    try:
        return (
            Case.objects.select_related("patient", "created_by")
            .prefetch_related(Prefetch("scans", queryset=_scans_qs().order_by("uploaded_at", "id")))
            .get(pk=case_id)
        )
    except Case.DoesNotExist:
        raise NotFound(f"There is no case #{case_id}.") from None


def scan_list(*, user: Any, case_id: int | None = None, status: str = "") -> QuerySet[Scan]:
    """Scans in upload order, optionally of one case and/or in one status."""
    _require_records(user)
    qs = _scans_qs().select_related("case__patient")
    filters = Q()
    if case_id is not None:
        filters &= Q(case_id=case_id)
    if status:
        filters &= Q(status=status)
    return qs.filter(filters).order_by("uploaded_at", "id")


def scan_get(*, user: Any, scan_id: int) -> Scan:
    """One scan with its case and patient, for the clinic's scan page."""
    _require_records(user)
    return _get_scan(scan_id)


def scan_image_get(*, user: Any, scan_id: int) -> Scan:
    """One scan whose image ``user`` may view: clinic staff and graders of every tier."""
    if not may_see_images(user=user):
        raise Forbidden(IMAGES_FORBIDDEN)
    return _get_scan(scan_id)


def _get_scan(scan_id: int) -> Scan:
    try:
        return _scans_qs().select_related("case__patient").get(pk=scan_id)
    except Scan.DoesNotExist:
        raise NotFound(f"There is no scan #{scan_id}.") from None


def scan_acknowledgements(*, user: Any, scan: Scan) -> list[Acknowledgement]:
    """Acknowledgements of a scan's result, newest first, with who made them."""
    _require_records(user)
    return list(scan.acknowledgements.select_related("acknowledged_by").order_by("-created_at", "-id"))


def volume_image_get(*, user: Any, volume_id: int) -> Volume:
    """One volume whose images (its localizer) ``user`` may view."""
    if not may_see_images(user=user):
        raise Forbidden(IMAGES_FORBIDDEN)
    try:
        return Volume.objects.select_related("case__patient").get(pk=volume_id)
    except Volume.DoesNotExist:
        raise NotFound(f"There is no volume #{volume_id}.") from None


def devices_in_use() -> list[str]:
    """The distinct device names of the examinations, by a walk of the index on
    ``Case.device`` (one step per name, not per examination: a few names among 200,000
    examinations cost a few index probes)."""
    table = Case._meta.db_table
    sql = f"""WITH RECURSIVE d(device) AS (
        SELECT min(device) FROM {table}
        UNION ALL
        SELECT (SELECT min(device) FROM {table} WHERE device > d.device) FROM d WHERE d.device IS NOT NULL
    ) SELECT device FROM d WHERE device IS NOT NULL AND device <> ''"""
    with connection.cursor() as cur:
        cur.execute(sql)
        return [row[0] for row in cur.fetchall()]


def devices_matching(text: str) -> list[str]:
    """The device names in use that contain ``text`` (case-insensitively)."""
    needle = text.casefold()
    return [d for d in devices_in_use() if needle in d.casefold()]
