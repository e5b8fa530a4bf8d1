"""Volume records: a volume of an examination holds its B-scans in order."""
from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from cases import services
from cases.models import Case, Scan, Volume
from octportal.errors import Conflict, DomainError
from tests.cases.conftest import stored_files, upload
from tests.factories import bscan_bytes


def _volume(case, **extra):
    fields = dict(
        case=case, source_format=Volume.SourceFormat.IMAGE_ZIP, laterality=case.eye, slice_count=2,
        sha256="a" * 64, original_name="vol.zip", uploaded_by=None,
    )
    return services.volume_create(**{**fields, **extra})


def test_volume_slices_may_repeat_content_but_not_position(case, clinician):
    volume = _volume(case)
    data = bscan_bytes(seed=3)
    first = services.scan_register(case=case, file=upload("0.png", data), uploaded_by=clinician, volume=volume, slice_index=0)
    second = services.scan_register(case=case, file=upload("1.png", data), uploaded_by=clinician, volume=volume, slice_index=1)
    assert [s.slice_index for s in volume.scans.order_by("slice_index")] == [0, 1]
    assert first.sha256 == second.sha256
    with pytest.raises((DomainError, IntegrityError)), transaction.atomic():
        services.scan_register(case=case, file=upload("x.png", bscan_bytes(seed=4)), uploaded_by=clinician,
                               volume=volume, slice_index=1)


def test_a_lone_scan_stays_unique_by_content_beside_a_volume(case, clinician):
    volume = _volume(case)
    data = bscan_bytes(seed=5)
    services.scan_register(case=case, file=upload("0.png", data), uploaded_by=clinician, volume=volume, slice_index=0)
    lone = services.scan_register(case=case, file=upload("a.png", data), uploaded_by=clinician)
    assert lone.volume is None and lone.slice_index is None
    with pytest.raises(Conflict):
        services.scan_register(case=case, file=upload("b.png", data), uploaded_by=clinician)


def test_slice_index_needs_a_volume(case):
    with pytest.raises(IntegrityError), transaction.atomic():
        Scan.objects.create(case=case, slice_index=0, original="x", image="y", sha256="b" * 64, original_name="x",
                            format="PNG", original_mode="L", file_size=1, width=1, height=1)


def test_volume_of_the_other_eye_is_refused(case):
    assert case.eye == Case.Eye.OD
    with pytest.raises(DomainError, match="left eye"):
        _volume(case, laterality=Case.Eye.OS)
    assert not Volume.objects.exists()


def test_same_volume_twice_is_a_duplicate_and_leaves_no_localizer(case, media_root):
    _volume(case, localizer_png=bscan_bytes())
    before = stored_files(media_root)
    with pytest.raises(Conflict, match="already in this case"):
        _volume(case, localizer_png=bscan_bytes())
    assert stored_files(media_root) == before and Volume.objects.count() == 1
