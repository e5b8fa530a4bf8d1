"""Fill the copies of each scan's review unit onto the scan (cases.0009): the stage, and
the final label once verified; a B-scan of a volume unit takes its volume's review."""
from django.db import migrations
from django.db.models import OuterRef, Subquery, Value
from django.db.models.functions import Coalesce


def copy_reviews(apps, schema_editor):
    Scan = apps.get_model("cases", "Scan")
    Review = apps.get_model("verification", "Review")
    for unit, outer in (("scan", "pk"), ("volume", "volume_id")):
        reviews = Review.objects.filter(**{unit: OuterRef(outer)})
        scans = Scan.objects.filter(**{f"{unit}__review__isnull": False} if unit == "volume" else {"review__isnull": False})
        scans.update(
            review_stage=Subquery(reviews.values("stage")[:1]),
            review_label=Coalesce(Subquery(reviews.filter(stage="verified").values("final_label")[:1]), Value("")),
        )


class Migration(migrations.Migration):
    dependencies = [
        ("cases", "0009_scan_review_copy"),
        ("verification", "0006_review_reference_candidates"),
    ]

    operations = [migrations.RunPython(copy_reviews, migrations.RunPython.noop)]
