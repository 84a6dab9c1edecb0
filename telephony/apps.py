from django.apps import AppConfig


class TelephonyConfig(AppConfig):
    name = "telephony"
    verbose_name = "Telephony"

    def ready(self) -> None:
        # Registers outbox result and send-time handlers and Bitrix24 event handlers.
        from telephony import bitrix_events, cards, directory, results  # noqa: F401
