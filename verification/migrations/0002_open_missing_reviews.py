"""Open a review for every scan that has none.

Reviews used to be created lazily when a worklist was read; now the intake service
opens one when a scan is submitted, and the worklists only read.
"""
from django.conf import settings
from django.db import migrations


def open_missing_reviews(apps, schema_editor):
    Scan = apps.get_model("cases", "Scan")
    Review = apps.get_model("verification", "Review")
    required = max(1, int(settings.VERIFICATION_REQUIRED_GRADES))
    missing = Scan.objects.filter(review__isnull=True).values_list("pk", flat=True)
    batch = []
    for pk in missing.iterator(chunk_size=5000):
        batch.append(Review(scan_id=pk, stage="quality_control", required_grades=required))
        if len(batch) >= 5000:
            Review.objects.bulk_create(batch, ignore_conflicts=True)
            batch = []
    if batch:
        Review.objects.bulk_create(batch, ignore_conflicts=True)


class Migration(migrations.Migration):
    dependencies = [("verification", "0001_initial"), ("cases", "0003_scan_colour_saturation")]

    operations = [migrations.RunPython(open_missing_reviews, migrations.RunPython.noop)]
