from django.db import migrations


class Migration(migrations.Migration):
    """``scan_class_urgency (current_class, current_urgency)`` is an exact prefix of
    ``scan_explore_cells (current_class, current_urgency, review_stage, review_label)``
    (migration 0009), which serves every query it served."""

    dependencies = [
        ('cases', '0010_case_exam_date_index'),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name='scan',
            name='scan_class_urgency',
        ),
    ]
