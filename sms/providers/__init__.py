"""The SMS gateway providers. Adding one: a module in this package with a class like
`mts_by.MtsCommunicator`, and one `register()` line below. Modules load on first use."""

from functools import cache
from importlib import import_module

from sms.providers.base import SmsProvider

REGISTRY: dict[str, str] = {}  # slug -> "module:Class"


def register(slug: str, path: str) -> None:
    """Offer the provider class at `path` ("module:Class") as `slug`; twice is a start-up error."""
    if slug in REGISTRY:
        raise RuntimeError(f"SMS provider {slug!r} is registered twice")
    REGISTRY[slug] = path


register("mts_by", "sms.providers.mts_by:MtsCommunicator")


@cache
def get(slug: str) -> SmsProvider:
    """The provider for a slug; KeyError for one that is not registered."""
    module, _, name = REGISTRY[slug].partition(":")
    return getattr(import_module(module), name)()


def choices() -> list[tuple[str, str]]:
    return [(slug, get(slug).name) for slug in REGISTRY]
