"""DICOM receiver: a Storage SCP that imports OCT volumes sent from devices or a PACS.

``manage.py dicom_receiver`` runs it (pynetdicom). It accepts associations only from
the calling AE titles in ``OCT_DICOM_ALLOWED_AE_TITLES`` (any other is rejected at
association), and only the Ophthalmic Tomography and Ophthalmic Photography storage
SOP classes in the transfer syntaxes a decoder here reads.

Each received instance is parsed, de-identified and its pixels decoded at once, in the
association's thread: a broken instance gets a failure status (0xC000, "cannot
understand") and is not kept. Good instances wait in memory, grouped by series (at
most 64 series and ``OCT_VOLUME_MAX_SLICES`` instances each; beyond, 0xA700 "out of
resources").

Series completeness: DICOM has no "end of series" message, and a device may send a
series over several associations. A series is taken as complete when nothing of it
arrived for ``OCT_DICOM_QUIET_S`` seconds (default 10); ``flush`` then imports it as
one volume (``intake.volumes.volume_import``: patient from the keyed hash of the
device's patient id, examination by eye and acquisition date), all or nothing. A
series refused then (e.g. no laterality, which a receiver cannot ask for) is logged
and dropped: nothing of it is stored. The database is touched only by ``flush``,
which the command calls from its main thread.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from pynetdicom import AE, evt
from pynetdicom.events import Event

from cases.models import Volume
from octportal.errors import DomainError

from .dicom import (
    OP_SOP_CLASSES,
    OPT_SOP_CLASS,
    DicomInstance,
    dicom_read,
    dicom_volume,
    pixels_check,
    supported_transfer_syntaxes,
)
from .source import VolumeRejected
from .volumes import volume_import

logger = logging.getLogger(__name__)

STATUS_SUCCESS = 0x0000
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_OUT_OF_RESOURCES = 0xA700


@dataclass
class _Pending:
    instances: list[DicomInstance] = field(default_factory=list)
    last_seen: float = 0.0
    calling_ae: str = ""


@dataclass
class FlushResult:
    volumes: list[Volume] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)


class Receiver:
    """Buffers received instances by series and imports each series once it is quiet."""

    def __init__(self, *, ae_title: str, allowed_calling: list[str], quiet_s: float, max_pending: int = 64,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not allowed_calling:
            raise ValueError("no calling AE title is allowed: set OCT_DICOM_ALLOWED_AE_TITLES")
        self.ae_title = ae_title
        self.allowed_calling = [a.strip() for a in allowed_calling if a.strip()]
        self.quiet_s = quiet_s
        self.max_pending = max_pending
        self.clock = clock
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        self._server = None

    # --- network side (association threads) -------------------------------------------

    def application_entity(self) -> AE:
        ae = AE(ae_title=self.ae_title)
        ae.require_calling_aet = self.allowed_calling
        syntaxes = [str(ts) for ts in supported_transfer_syntaxes()]
        for sop_class in (OPT_SOP_CLASS, *sorted(OP_SOP_CLASSES)):
            ae.add_supported_context(sop_class, syntaxes)
        return ae

    def handle_store(self, event: Event) -> int:
        calling = event.assoc.requestor.ae_title.strip()
        name = f"instance from {calling}"
        try:
            data = event.encoded_dataset(include_meta=True)
            inst = dicom_read(data, name=name)
            pixels_check(inst)
        except VolumeRejected as exc:
            logger.warning("refused %s: %s", name, exc.message)
            return STATUS_CANNOT_UNDERSTAND
        except Exception:  # noqa: BLE001 - whatever a broken instance raises, refuse it and go on
            logger.exception("refused %s: unreadable", name)
            return STATUS_CANNOT_UNDERSTAND
        key = inst.series_uid
        with self._lock:
            if key not in self._pending and len(self._pending) >= self.max_pending:
                return STATUS_OUT_OF_RESOURCES
            pending = self._pending.setdefault(key, _Pending(calling_ae=calling))
            if len(pending.instances) >= settings.OCT_VOLUME_MAX_SLICES:
                return STATUS_OUT_OF_RESOURCES
            pending.instances.append(inst)
            pending.last_seen = self.clock()
        return STATUS_SUCCESS

    def start(self, *, bind: str, port: int):
        """Start serving in background threads; return the server (``server_address`` has the port)."""
        self._server = self.application_entity().start_server(
            (bind, port), block=False, evt_handlers=[(evt.EVT_C_STORE, self.handle_store)]
        )
        return self._server

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    # --- import side (the caller's thread) --------------------------------------------

    def pending_series(self) -> int:
        with self._lock:
            return len(self._pending)

    def flush(self, *, force: bool = False) -> FlushResult:
        """Import every series quiet for ``quiet_s`` (every series with ``force``)."""
        now = self.clock()
        with self._lock:
            due = [k for k, p in self._pending.items() if force or now - p.last_seen >= self.quiet_s]
            batches = [self._pending.pop(k) for k in due]
        result = FlushResult()
        for pending in batches:
            name = f"DICOM series from {pending.calling_ae}"
            try:
                source = dicom_volume(pending.instances, name=name)
                volume = volume_import(source=source, uploaded_by=None)
            except DomainError as exc:
                logger.warning("series refused: %s", exc.message)
                result.refused.append((name, exc.message))
                continue
            except Exception as exc:  # noqa: BLE001 - one series must not stop the receiver
                logger.exception("series import failed")
                result.refused.append((name, str(getattr(exc, "message", exc))))
                continue
            logger.info("volume %s: %s B-scans into case %s", volume.pk, volume.slice_count, volume.case_id)
            result.volumes.append(volume)
        return result
