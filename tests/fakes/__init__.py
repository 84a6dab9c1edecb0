"""Test fakes for external services (network-level, stdlib only)."""

from .bitrix24 import BitrixError, Call, FakeBitrix24, FakePortal, ListResult

__all__ = ["BitrixError", "Call", "FakeBitrix24", "FakePortal", "ListResult"]
