"""WSGI entry point (gunicorn): production settings unless DJANGO_SETTINGS_MODULE says otherwise.

``manage.py`` keeps the development default (``runserver`` for local use); a server
started from this module must never fall back to debug settings and a known key.
"""
import os

from django.core.wsgi import get_wsgi_application

from octportal import celery as _celery

# Importing the octportal package already set the development default (octportal.celery);
# a web server that nobody configured gets production instead.
if _celery.SETTINGS_DEFAULTED:
    os.environ["DJANGO_SETTINGS_MODULE"] = "octportal.settings.production"
application = get_wsgi_application()
