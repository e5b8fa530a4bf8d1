from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "inference"
    verbose_name = "Automated reading"

    def ready(self) -> None:
        # Register the Celery tasks in every process (web too): the queue service
        # publishes them by name from the registry instead of importing this module.
        from . import tasks  # noqa: F401

        # /readyz checks the model file against the active version (octportal.health).
        from octportal.health import register_check

        from .health import check_model

        register_check("model", check_model)
