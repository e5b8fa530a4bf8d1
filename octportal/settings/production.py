"""Production settings: no debug, a real secret key, HTTPS only, secure cookies.

``manage.py check --deploy`` passes without warnings with the defaults. For a trial on
plain HTTP (no TLS in front), set ``OCT_SSL_REDIRECT=false`` and
``DJANGO_SECURE_COOKIES=false``; the check then says so, as it should.
"""
from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F401,F403
from .base import OCT_TRUSTED_PROXIES, env

SECRET_KEY = env("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set in production.")
DEBUG = False
SESSION_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=True)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"

SECURE_SSL_REDIRECT = env.bool("OCT_SSL_REDIRECT", default=True)
# The proxy terminates TLS and says so in X-Forwarded-Proto; believed only when a proxy
# is configured (a client talking to gunicorn directly could claim https otherwise).
if OCT_TRUSTED_PROXIES:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = env.int("OCT_HSTS_SECONDS", default=365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("OCT_HSTS_INCLUDE_SUBDOMAINS", default=True)
# Only a token in the header: the domain joins browsers' preload lists when its owner submits it.
SECURE_HSTS_PRELOAD = env.bool("OCT_HSTS_PRELOAD", default=True)
