from django.urls import path

from telephony.views import PbxWebhookView

urlpatterns = [
    path("hooks/<uuid:hook>/", PbxWebhookView.as_view(), name="pbx-webhook"),
    # Mango appends events/call, events/summary ... to the base URL.
    path("hooks/<uuid:hook>/<path:subpath>", PbxWebhookView.as_view(), name="pbx-webhook-path"),
]
