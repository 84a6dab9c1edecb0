"""The PBX providers. Adding one: a module in this package and one line in REGISTRY
(docs/adding-a-provider.md lists every file to touch). Modules load on first use."""

from functools import cache
from importlib import import_module

from telephony.providers.base import Provider

REGISTRY: dict[str, str] = {
    "mango": "telephony.providers.mango:Mango",
}


@cache
def get(slug: str) -> Provider:
    """The provider for a slug; KeyError for one that is not registered."""
    module, _, name = REGISTRY[slug].partition(":")
    return getattr(import_module(module), name)()


def choices() -> list[tuple[str, str]]:
    return [(slug, get(slug).name) for slug in REGISTRY]
