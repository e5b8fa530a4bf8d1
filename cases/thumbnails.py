"""Small PNG previews of stored scan images (list pages, explore, reports)."""
from __future__ import annotations

import io

from django.db.models.fields.files import FieldFile
from PIL import Image

THUMBNAIL_SIZE = (192, 144)


def thumbnail_png(field: FieldFile, size: tuple[int, int] = THUMBNAIL_SIZE) -> bytes:
    """A PNG no larger than ``size`` of the stored image ``field`` (FileNotFoundError if missing)."""
    with field.open("rb") as handle, Image.open(handle) as img:
        img.thumbnail(size)
        out = io.BytesIO()
        img.save(out, format="PNG", optimize=True)
    return out.getvalue()
