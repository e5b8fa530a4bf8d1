"""WSGI entry point (gunicorn): production settings unless DJANGO_SETTINGS_MODULE says otherwise.

``manage.py`` keeps the development default (``runserver`` for local use); a server
started from this module must never fall back to debug settings and a known key.
"""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "octportal.settings.production")
application = get_wsgi_application()
