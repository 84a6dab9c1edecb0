from django.urls import path

from sms.views import SmsReportView, SmsSendView

urlpatterns = [
    path("send/<uuid:hook>/", SmsSendView.as_view(), name="sms-send"),
    path("dlr/<uuid:hook>/", SmsReportView.as_view(), name="sms-dlr"),
]
