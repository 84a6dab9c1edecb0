from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class BitrixAppConfig(AppConfig):
    name = "bitrixapp"
    verbose_name = _("Bitrix24 platform")

    def ready(self) -> None:
        # Registers the outbox result handlers used by install/setup, notifications and the
        # events inbox; describes the endpoints in the OpenAPI schema.
        from bitrixapp import events, inbox, install, problems, schema, users  # noqa: F401
        from bitrixapp.models import BitrixEvent

        inbox.register(BitrixEvent, events.handle, queue="default")
