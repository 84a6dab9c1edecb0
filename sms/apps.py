from django.apps import AppConfig
from django.utils.translation import pgettext_lazy


class SmsConfig(AppConfig):
    name = "sms"
    verbose_name = pgettext_lazy("admin section", "SMS")

    def ready(self) -> None:
        # Registers the outbox result handlers (sender registration, consent), the two
        # inboxes, the `sms` section of the configuration file and the app page's SMS panel.
        from bitrixapp import app_page, inbox
        from sms import app_panel, config, consent, pipeline, schema, senders  # noqa: F401
        from sms.models import SmsDeliveryReport, SmsHandlerCall

        app_page.register("sms", app_panel.panel)
        # A campaign never delays call events: its own queue.
        inbox.register(SmsHandlerCall, pipeline.handle_call, queue="sms")
        inbox.register(SmsDeliveryReport, pipeline.handle_report, queue="sms")
