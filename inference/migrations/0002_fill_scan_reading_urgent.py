"""Fill ``Scan.reading_urgent`` from each scan's current reading (its newest prediction)."""
from django.db import migrations
from django.db.models import OuterRef, Subquery


def fill(apps, schema_editor):
    Scan = apps.get_model("cases", "Scan")
    Prediction = apps.get_model("inference", "Prediction")
    newest = Prediction.objects.filter(scan=OuterRef("pk")).order_by("-created_at", "-id")
    current = Scan.objects.annotate(
        now_urgency=Subquery(newest.values("urgency")[:1]), now_passed=Subquery(newest.values("gate_passed")[:1])
    )
    current.filter(now_urgency="urgent", now_passed=True).update(reading_urgent=True)


class Migration(migrations.Migration):
    dependencies = [("inference", "0001_initial"), ("cases", "0005_scan_reading_urgent")]

    operations = [migrations.RunPython(fill, migrations.RunPython.noop)]
