from django.apps import AppConfig


class TelephonyConfig(AppConfig):
    name = "telephony"
    verbose_name = "Telephony"

    def ready(self) -> None:
        # Registers outbox result handlers, Bitrix24 event handlers, the webhook inbox and the
        # `pbx` section of the configuration file; describes the PBX webhook in the schema.
        from bitrixapp import inbox
        from telephony import bitrix_events, config, directory, pipeline, results, schema  # noqa: F401
        from telephony.models import PbxEvent

        # Call events never wait behind other work (DESIGN.md principle 7).
        inbox.register(PbxEvent, pipeline.handle, queue="calls")
