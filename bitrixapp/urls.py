from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from bitrixapp import views

urlpatterns = [
    path("bitrix/install/", views.InstallView.as_view(), name="bitrix-install"),
    path("bitrix/app/", views.AppPageView.as_view(), name="bitrix-app"),
    path("bitrix/events/", views.EventsView.as_view(), name="bitrix-events"),
    path("bitrix/admin-login/", views.admin_login_view, name="bitrix-admin-login"),
    path("", views.home, name="home"),
    path("telephony/", include("telephony.urls")),
    path("sms/", include("sms.urls")),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]

if settings.DEMO:  # `make demo`: the one-time admin link it prints
    from demo.login import one_time_login

    urlpatterns.append(path("demo/login/<str:token>/", one_time_login, name="demo-login"))

handler404 = "bitrixapp.http.not_found_view"
