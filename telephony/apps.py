from django.apps import AppConfig


class TelephonyConfig(AppConfig):
    name = "telephony"
    verbose_name = "Telephony"

    def ready(self) -> None:
        # Registers outbox result handlers and Bitrix24 event handlers.
        from telephony import bitrix_events, directory, results  # noqa: F401
