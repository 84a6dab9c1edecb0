from django.contrib import admin
from django.urls import include, path

from bitrixapp import views

urlpatterns = [
    path("bitrix/install/", views.InstallView.as_view(), name="bitrix-install"),
    path("bitrix/app/", views.AppPageView.as_view(), name="bitrix-app"),
    path("bitrix/events/", views.EventsView.as_view(), name="bitrix-events"),
    path("telephony/", include("telephony.urls")),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("admin/", admin.site.urls),
]

handler404 = "bitrixapp.http.not_found_view"
