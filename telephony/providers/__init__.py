"""The PBX providers. Adding one: a module in this package and one `register()` line below
(docs/adding-a-provider.md lists every file to touch). Modules load on first use."""

from functools import cache
from importlib import import_module

from telephony.providers.base import Provider

REGISTRY: dict[str, str] = {}  # slug -> "module:Class"


def register(slug: str, path: str) -> None:
    """Offer the provider class at `path` ("module:Class") as `slug`; a slug registered twice
    is a start-up error (the second would silently replace the first)."""
    if slug in REGISTRY:
        raise RuntimeError(f"PBX provider {slug!r} is registered twice")
    REGISTRY[slug] = path


register("mango", "telephony.providers.mango:Mango")


@cache
def get(slug: str) -> Provider:
    """The provider for a slug; KeyError for one that is not registered."""
    module, _, name = REGISTRY[slug].partition(":")
    return getattr(import_module(module), name)()


def choices() -> list[tuple[str, str]]:
    return [(slug, get(slug).name) for slug in REGISTRY]
