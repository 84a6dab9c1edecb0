from django.apps import AppConfig


class TelephonyConfig(AppConfig):
    name = "telephony"
    verbose_name = "Telephony"

    def ready(self) -> None:
        # Registers outbox result handlers, Bitrix24 event handlers and the webhook inbox.
        from bitrixapp import inbox
        from telephony import bitrix_events, directory, pipeline, results  # noqa: F401
        from telephony.models import PbxEvent

        # Call events never wait behind other work (DESIGN.md principle 7).
        inbox.register(PbxEvent, pipeline.handle, queue="calls")
