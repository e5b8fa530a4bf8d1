"""Outbound webhooks: events become signed, recorded, retried POSTs.

The events are hooked in without upward imports: Django's own ``post_save`` (defined
low) of the rows the services write (a Prediction, a verified Review, a ReportVersion)
is connected here, in the top layer (``IntegrationsConfig.ready``). Nothing below knows.
A verified review is ``scan.verified`` or, for a volume reviewed as one unit (one eye),
``volume.verified``.

A body names the patient only by the keyed pseudonym of the exports (never the
identifier), a scan by its neutral code, a volume by its id (never a file name or date). ``X-OCT-Signature: sha256=<hex>`` is
HMAC-SHA256 of the exact body bytes with the webhook's secret.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import urllib.error
import urllib.request
import uuid
from typing import Any

from celery import current_app
from django.db import IntegrityError, transaction
from django.utils import timezone

from cases.models import Scan, Volume
from inference.models import Prediction
from verification.exports import patient_pseudonym
from verification.models import ReportVersion, Review
from verification.selectors import volume_key_scans

from .models import Delivery, Event, Webhook

logger = logging.getLogger(__name__)

TASK_DELIVER = "integrations.tasks.webhook_deliver"
SIGNATURE_HEADER = "X-OCT-Signature"
MAX_ATTEMPTS = 6
TIMEOUT_S = 10


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), sort_keys=True, default=str).encode()


def _scan_data(scan: Scan) -> dict[str, Any]:
    return {
        "scan": scan.pk,
        "scan_code": scan.code,
        "case": scan.case_id,
        "eye": scan.case.eye,
        "patient_pseudonym": patient_pseudonym(scan.case.patient.identifier),
    }


def _volume_data(volume: Volume) -> dict[str, Any]:
    """A volume's part of an event, as ``_scan_data`` is a scan's: its eye is the volume's laterality."""
    return {
        "volume": volume.pk,
        "case": volume.case_id,
        "eye": volume.laterality,
        "slice_count": volume.slice_count,
        "patient_pseudonym": patient_pseudonym(volume.case.patient.identifier),
    }


def _subscribers(event: str) -> list[Webhook]:
    return [w for w in Webhook.objects.filter(is_active=True) if event in (w.events or [])]


def event_emit(*, event: str, key: str, data: dict[str, Any], webhooks: list[Webhook] | None = None) -> list[Delivery]:
    """Record a delivery of ``event`` for every active webhook that wants it; send after commit."""
    made = []
    for webhook in _subscribers(event) if webhooks is None else webhooks:
        body = {"id": str(uuid.uuid4()), "event": event, "occurred_at": timezone.now().isoformat(), "data": data}
        try:
            with transaction.atomic():
                delivery = Delivery.objects.create(webhook=webhook, event=event, event_key=key[:120], body=body)
        except IntegrityError:  # this event was recorded for this webhook already
            continue
        made.append(delivery)
        transaction.on_commit(lambda pk=delivery.pk: _enqueue(pk))
    return made


def _enqueue(delivery_id: int) -> None:
    try:
        current_app.tasks[TASK_DELIVER].apply_async(args=[delivery_id])
    except Exception as exc:  # noqa: BLE001 - a broker failure leaves the delivery pending, never breaks the caller
        logger.warning("could not enqueue webhook delivery %s (%s)", delivery_id, type(exc).__name__)


def delivery_attempt(*, delivery_id: int) -> str:
    """POST the delivery once; record the attempt. Returns its status (``pending`` = retry later)."""
    delivery = Delivery.objects.select_related("webhook").filter(pk=delivery_id).first()
    if delivery is None or delivery.status != Delivery.Status.PENDING:
        return Delivery.Status.DELIVERED if delivery else Delivery.Status.FAILED
    body = encode(delivery.body)
    request = urllib.request.Request(
        delivery.webhook.url, data=body, method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "OCT-Portal-Webhook/1",
                 SIGNATURE_HEADER: sign(delivery.webhook.secret, body), "X-OCT-Event": delivery.event,
                 "X-OCT-Delivery": delivery.body.get("id", "")},
    )
    status, error = None, ""
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310 - admin-registered URL
            status = response.status
    except urllib.error.HTTPError as exc:
        status, error = exc.code, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        error = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"[:300]
    delivery.attempts += 1
    delivery.response_status = status
    delivery.error = error
    delivery.history = [*delivery.history, {"at": timezone.now().isoformat(), "status": status, "error": error}]
    if status is not None and 200 <= status < 300:
        delivery.status, delivery.delivered_at, delivery.error = Delivery.Status.DELIVERED, timezone.now(), ""
    elif delivery.attempts >= MAX_ATTEMPTS or (status is not None and 400 <= status < 500 and status not in (408, 429)):
        delivery.status = Delivery.Status.FAILED  # gave up, or the receiver refuses it for good
    delivery.save(update_fields=["attempts", "response_status", "error", "history", "status", "delivered_at"])
    return delivery.status


# --- the events, connected to post_save in apps.py ---------------------------------------


def on_prediction_saved(sender, instance: Prediction, created: bool, **kwargs: Any) -> None:
    if not created or not (subscribers := _subscribers(Event.READING_READY)):
        return
    scan = Scan.objects.select_related("case__patient").get(pk=instance.scan_id)
    data = {
        **_scan_data(scan),
        "predicted": instance.predicted,
        "urgency": instance.urgency,
        "confidence": instance.confidence,
        "gate_passed": instance.gate_passed,
        "quality_score": instance.quality_score,
        "low_confidence": instance.low_confidence,
        "quality_reasons": instance.quality_reasons,
        "model_version": instance.model_version.label,
    }
    key = f"{Event.READING_READY}:prediction:{instance.pk}"
    event_emit(event=Event.READING_READY, key=key, data=data, webhooks=subscribers)


def on_review_saved(sender, instance: Review, **kwargs: Any) -> None:
    if instance.stage != Review.Stage.VERIFIED or instance.verified_at is None:
        return
    if instance.volume_id is not None:
        _volume_verified(instance)
        return
    if not (subscribers := _subscribers(Event.SCAN_VERIFIED)):
        return
    scan = Scan.objects.select_related("case__patient").get(pk=instance.scan_id)
    data = {**_scan_data(scan), "final_label": instance.final_label, "verified_at": instance.verified_at.isoformat()}
    key = f"{Event.SCAN_VERIFIED}:scan:{scan.pk}:{instance.verified_at.isoformat()}"
    event_emit(event=Event.SCAN_VERIFIED, key=key, data=data, webhooks=subscribers)


def _volume_verified(review: Review) -> None:
    """``volume.verified``: the eye's final label, and the key B-scans its tier 2 grades marked
    (their scan ids and neutral codes, so a receiver can fetch them through the API)."""
    if not (subscribers := _subscribers(Event.VOLUME_VERIFIED)):
        return
    volume = Volume.objects.select_related("case__patient").get(pk=review.volume_id)
    data = {
        **_volume_data(volume),
        "final_label": review.final_label,
        "verified_at": review.verified_at.isoformat(),
        "key_slices": [
            {"slice_index": scan.slice_index, "scan": scan.pk, "scan_code": scan.code}
            for scan in volume_key_scans(volume=volume).only("pk", "slice_index")
        ],
    }
    # A later tier 3 correction has a new verification time: a new event, like scan.verified.
    key = f"{Event.VOLUME_VERIFIED}:volume:{volume.pk}:{review.verified_at.isoformat()}"
    event_emit(event=Event.VOLUME_VERIFIED, key=key, data=data, webhooks=subscribers)


def on_report_saved(sender, instance: ReportVersion, created: bool, **kwargs: Any) -> None:
    if not created or not (subscribers := _subscribers(Event.REPORT_SIGNED)):
        return
    case = instance.case
    data = {
        "case": case.pk,
        "eye": case.eye,
        "patient_pseudonym": patient_pseudonym(case.patient.identifier),
        "report_version": instance.number,
        "signed_at": instance.signed_at.isoformat(),
    }
    key = f"{Event.REPORT_SIGNED}:report:{instance.pk}"
    event_emit(event=Event.REPORT_SIGNED, key=key, data=data, webhooks=subscribers)
