from django.apps import AppConfig


class SmsConfig(AppConfig):
    name = "sms"
    verbose_name = "SMS"

    def ready(self) -> None:
        # Registers the outbox result handlers (sender registration, consent), the two
        # inboxes and the `sms` section of the configuration file.
        from bitrixapp import inbox
        from sms import config, consent, pipeline, schema, senders  # noqa: F401
        from sms.models import SmsDeliveryReport, SmsHandlerCall

        # A campaign never delays call events: its own queue.
        inbox.register(SmsHandlerCall, pipeline.handle_call, queue="sms")
        inbox.register(SmsDeliveryReport, pipeline.handle_report, queue="sms")
