"""Fill the copy of each scan's current reading (its newest prediction) on ``Scan``."""
from django.db import migrations
from django.db.models import OuterRef, Subquery


def fill(apps, schema_editor):
    Scan = apps.get_model("cases", "Scan")
    Prediction = apps.get_model("inference", "Prediction")
    newest = Prediction.objects.filter(scan=OuterRef("pk")).order_by("-created_at", "-id")
    current = Scan.objects.annotate(
        now_class=Subquery(newest.values("predicted")[:1]),
        now_urgency=Subquery(newest.values("urgency")[:1]),
        now_passed=Subquery(newest.values("gate_passed")[:1]),
    ).filter(now_passed=True)
    for code in ("CNV", "DME", "DRUSEN", "NORMAL"):
        for urgency in ("urgent", "routine", "observation"):
            current.filter(now_class=code, now_urgency=urgency).update(
                current_class=code, current_urgency=urgency, current_urgent=(urgency == "urgent")
            )


class Migration(migrations.Migration):
    dependencies = [("inference", "0001_initial"), ("cases", "0005_scan_current_reading")]

    operations = [migrations.RunPython(fill, migrations.RunPython.noop)]
