from django.apps import AppConfig


class BitrixAppConfig(AppConfig):
    name = "bitrixapp"
    verbose_name = "Bitrix24 platform"

    def ready(self) -> None:
        # Registers the outbox result handlers used by install/setup; describes the endpoints
        # in the OpenAPI schema.
        from bitrixapp import install, schema  # noqa: F401
