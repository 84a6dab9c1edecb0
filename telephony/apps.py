from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class TelephonyConfig(AppConfig):
    name = "telephony"
    verbose_name = _("Telephony")

    def ready(self) -> None:
        # Registers outbox result and send-time handlers, Bitrix24 event handlers, the webhook
        # inbox and the `pbx` section of the configuration file; describes the PBX webhook in
        # the OpenAPI schema.
        from bitrixapp import app_page, inbox
        from telephony import (  # noqa: F401
            alerts,
            app_panel,
            bitrix_events,
            cards,
            config,
            directory,
            pipeline,
            results,
            schema,
        )
        from telephony.models import PbxEvent

        # Call events never wait behind other work: their own queue.
        inbox.register(
            PbxEvent,
            pipeline.handle,
            queue="calls",
            related=pipeline.EVENT_RELATED,
            deferred=pipeline.PORTAL_SECRETS,
            batch_by="connection_id",
            handle_batch=pipeline.handle_batch,
            batch_fields=("events", "call"),
        )
        app_page.register("telephony", app_panel.panel)
