"""The PBX providers. Adding one: a module in this package and one `register()` line below
(docs/adding-a-provider.md lists every file to touch). Modules load on first use."""

from functools import cache
from importlib import import_module

from django.utils.translation import gettext_lazy as _

from telephony.providers.base import Provider

REGISTRY: dict[str, str] = {}  # slug -> "module:Class"


def register(slug: str, path: str) -> None:
    """Offer the provider class at `path` ("module:Class") as `slug`; a slug registered twice
    is a start-up error (the second would silently replace the first)."""
    if slug in REGISTRY:
        raise RuntimeError(f"PBX provider {slug!r} is registered twice")
    REGISTRY[slug] = path


register("mango", "telephony.providers.mango:Mango")
register("mtt", "telephony.providers.mtt:Mtt")
register("generic", "telephony.providers.generic:GenericJson")


@cache
def get(slug: str) -> Provider:
    """The provider for a slug; KeyError for one that is not registered."""
    module, _, name = REGISTRY[slug].partition(":")
    return getattr(import_module(module), name)()


def choices() -> list[tuple[str, str]]:
    return [(slug, get(slug).name) for slug in REGISTRY]


GENERIC_HINT = _("Enter this URL in the PBX as the address of the external system it notifies.")


def webhook_hint(slug: str) -> str:
    """Where the provider's customer pastes the webhook URL (optional `webhook_hint`)."""
    return getattr(get(slug), "webhook_hint", GENERIC_HINT) if slug in REGISTRY else GENERIC_HINT


def setting_defaults(slug: str) -> dict[str, object]:
    """Connection settings a new connection of this provider starts with (optional
    `setting_defaults`), where they differ from the model's defaults."""
    return dict(getattr(get(slug), "setting_defaults", {})) if slug in REGISTRY else {}
