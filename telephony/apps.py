from django.apps import AppConfig


class TelephonyConfig(AppConfig):
    name = "telephony"
    verbose_name = "Telephony"

    def ready(self) -> None:
        # Registers outbox result handlers, Bitrix24 event handlers and the `pbx` section of
        # the configuration file; describes the PBX webhook in the OpenAPI schema.
        from telephony import bitrix_events, config, directory, results, schema  # noqa: F401
