"""Gunicorn settings of the web container (``gunicorn -c docker/gunicorn.conf.py``).

The access log leaves out the query string (``%(U)s`` is the path alone; the default
``%(r)s`` request line would carry a patient search such as ``?q=KER-103044``) and
the referrer, which carries the previous page's query string.
"""
import os

bind = "0.0.0.0:8000"
workers = int(os.environ.get("WEB_CONCURRENCY", "3"))
timeout = 60
accesslog = "-"
access_log_format = '%(h)s - %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms "%(a)s"'
