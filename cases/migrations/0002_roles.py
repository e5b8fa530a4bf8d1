"""Create one auth group per role. Model permissions for the Django admin are
assigned by ``manage.py setup_roles`` (it needs every app's permissions to exist)."""
from django.db import migrations

ROLE_GROUPS = ["clinic_staff", "grader_tier1", "grader_tier2", "grader_tier3", "admin"]


def create_groups(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    for name in ROLE_GROUPS:
        Group.objects.get_or_create(name=name)


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLE_GROUPS).delete()


class Migration(migrations.Migration):
    dependencies = [("cases", "0001_initial"), ("auth", "0012_alter_user_first_name_max_length")]
    operations = [migrations.RunPython(create_groups, remove_groups)]
