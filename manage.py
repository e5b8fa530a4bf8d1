#!/usr/bin/env python
"""Django's command-line utility for OCT Portal."""
import os
import sys


def main() -> None:
    # Development default, for local use (runserver, seed_demo); servers import
    # octportal.wsgi, whose default is production.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "octportal.settings.base")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
