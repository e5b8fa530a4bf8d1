"""The Celery application. Without CELERY_BROKER_URL tasks run eagerly in-process."""
import os

from celery import Celery

# Whether the development default below was taken: octportal.wsgi (imported after this
# package) then switches to production settings instead.
SETTINGS_DEFAULTED = "DJANGO_SETTINGS_MODULE" not in os.environ
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "octportal.settings.base")

app = Celery("octportal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
