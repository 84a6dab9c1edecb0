"""The `sms` section of the configuration file: a portal's SMS accounts and their senders
(docs/configuration.md). Accounts are matched by name, senders by their Bitrix24 code.

What the file says is applied; an omitted setting keeps its value (the model default for a
new account), an omitted `senders` list leaves the senders alone, a given one is made exact
(senders missing from it are removed, in Bitrix24 too). New and changed senders are
registered in Bitrix24 (sms.senders); unchanged rows are not written, so re-importing the
same file changes nothing. The export adds each account's `dlr_url` and each sender's
`handler_url`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bitrixapp import config, phones
from bitrixapp.config import Checker
from bitrixapp.models import Portal
from sms import providers, senders
from sms.models import (
    TTL_MAX_S,
    TTL_MIN_S,
    SmsAccount,
    SmsSender,
    alpha_name_validator,
    sender_code_validator,
)

ACCOUNT_KEYS = {"name", "provider", "credentials", "senders", "dlr_url"}
SENDER_KEYS = {"code", "handler_url"}


def _region(value: Any) -> str:
    code = config.text(2)(value).upper()
    if not phones.is_region(code):
        raise config.Invalid("must be a two-letter country code, e.g. BY")
    return code


def _regions(value: Any) -> str:
    codes = value if isinstance(value, list) else config.text(200, blank=True)(value).split(",")
    return ",".join(_region(code.strip()) for code in codes if str(code).strip())


def _between(low: int, high: int) -> config.Check:
    def check(value: Any) -> int:
        number = config.count(value)
        if not low <= number <= high:
            raise config.Invalid(f"must be from {low} to {high}")
        return number

    return check


def _validated(validator: Any, max_length: int) -> config.Check:
    def check(value: Any) -> str:
        value = config.text(max_length)(value)
        try:
            validator(value)
        except Exception as exc:
            raise config.Invalid(" ".join(getattr(exc, "messages", [str(exc)]))) from None
        return value

    return check


# Each account and sender setting once: the model field and the check of its value.
ACCOUNT_SETTINGS: dict[str, config.Check] = {
    "api_url": config.url,
    "default_region": _region,
    "allowed_regions": _regions,
    "rate_per_second": _between(1, 1000),
    "ttl_s": _between(TTL_MIN_S, TTL_MAX_S),
    "is_active": config.boolean,
}


def _kind(value: Any) -> str:
    kind = config.text(16)(value)
    if kind not in SmsSender.Kind.values:
        raise config.Invalid(f"must be one of {', '.join(SmsSender.Kind.values)}")
    return kind


SENDER_SETTINGS: dict[str, config.Check] = {
    "name": config.text(100),
    "alpha_name": _validated(alpha_name_validator, 11),
    "kind": _kind,
    "consent_field": config.text(100, blank=True),
    "is_active": config.boolean,
}


@dataclass
class SenderSpec:
    code: str
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class AccountSpec:
    name: str
    provider: str
    credentials: dict[str, str]
    settings: dict[str, Any] = field(default_factory=dict)
    senders: list[SenderSpec] | None = None


# ---------------------------------------------------------------- checking


def parse(checker: Checker, path: str, entries: Any) -> list[AccountSpec]:
    accounts = checker.entries(path, entries, lambda p, e: _parse_account(checker, p, e), "name")
    codes: set[str] = set()
    for i, account in enumerate(accounts or []):
        for j, sender in enumerate(account.senders or []):
            if sender.code in codes:
                checker.fail(f"{path}[{i}].senders[{j}].code", f"{sender.code!r} is given twice")
            codes.add(sender.code)
    return accounts or []


def _parse_account(checker: Checker, path: str, entry: Any) -> AccountSpec | None:
    data = checker.mapping(path, entry, ACCOUNT_KEYS | ACCOUNT_SETTINGS.keys())
    if data is None:
        return None
    before = len(checker.errors)
    credentials = config.parse_credentials(checker, f"{path}.credentials", data.get("credentials"))
    spec = AccountSpec(
        name=checker.required(path, data, "name", config.text(100)),
        provider=checker.required(path, data, "provider", config.registered_in(providers.REGISTRY)),
        credentials=credentials,
        settings=checker.optional(path, data, ACCOUNT_SETTINGS),
        senders=checker.entries(
            f"{path}.senders",
            data.get("senders"),
            lambda p, e: _parse_sender(checker, p, e),
            "code",
        ),
    )
    if spec.provider and len(checker.errors) == before:
        config.check_provider_credentials(
            checker,
            f"{path}.credentials",
            spec.credentials,
            spec.provider,
            providers.get(spec.provider),
        )
    return spec


def _parse_sender(checker: Checker, path: str, entry: Any) -> SenderSpec | None:
    data = checker.mapping(path, entry, SENDER_KEYS | SENDER_SETTINGS.keys())
    if data is None:
        return None
    spec = SenderSpec(
        code=checker.required(path, data, "code", _validated(sender_code_validator, 50)),
        settings=checker.optional(path, data, SENDER_SETTINGS),
    )
    for key in ("name", "alpha_name"):
        if key not in data:
            checker.fail(f"{path}.{key}", "required")
    return spec


# ---------------------------------------------------------------- applying


def apply(portal: Portal, specs: list[AccountSpec], path: str) -> list[str]:
    report: list[str] = []
    for index, spec in enumerate(specs):
        report += _apply_account(portal, spec, f"{path}[{index}]")
    return report


def _apply_account(portal: Portal, spec: AccountSpec, path: str) -> list[str]:
    account = SmsAccount.objects.select_for_update().filter(portal=portal, name=spec.name).first()
    created = account is None
    if account is None:
        account = SmsAccount(portal=portal, name=spec.name)
    stored = account.credentials if account.provider == spec.provider else {}
    changed = config.update_fields(
        account,
        {
            "provider": spec.provider,
            "credentials": config.resolve_credentials(
                stored, spec.credentials, f"{path}.credentials"
            ),
            **spec.settings,
        },
    )
    if created or changed:
        account.save()
    report = [f"{spec.name}: created"] if created else []
    if changed and not created:
        report.append(f"{spec.name}: updated {', '.join(changed)}")
    if spec.senders is not None:
        report += sync_senders(account, spec.senders, f"{path}.senders")
    elif "is_active" in changed:
        for sender in account.senders.all():
            senders.sync(sender)
    return report


def sync_senders(account: SmsAccount, wanted: list[SenderSpec], path: str) -> list[str]:
    current = {sender.code: sender for sender in account.senders.all()}
    report = []
    for index, spec in enumerate(wanted):
        sender = current.pop(spec.code, None)
        if sender is None:
            taken = SmsSender.objects.filter(portal=account.portal, code=spec.code).first()
            if taken is not None:
                where = f"{path}[{index}].code"
                used = f"{spec.code!r} is used by account {taken.account.name!r}"
                raise config.ConfigError([f"{where}: {used}"])
            sender = SmsSender(portal=account.portal, account=account, code=spec.code)
        changed = config.update_fields(sender, spec.settings)
        if sender.pk is None or changed:
            sender.save()
            senders.sync(sender)
            report.append(f"{account.name}: sender {sender.code} registered in Bitrix24")
    for sender in current.values():
        senders.forget(sender)
        sender.delete()
        report.append(f"{account.name}: sender {sender.code} removed")
    return report


# ---------------------------------------------------------------- exporting


def export(portal: Portal, with_secrets: bool) -> list[dict[str, Any]]:
    accounts = portal.sms_accounts.order_by("name").prefetch_related("senders")
    return [_export_account(account, with_secrets) for account in accounts]


def _export_account(account: SmsAccount, with_secrets: bool) -> dict[str, Any]:
    return {
        "name": account.name,
        "provider": account.provider,
        "dlr_url": account.dlr_url,
        "credentials": config.export_credentials(account.credentials, with_secrets),
        **config.export_settings(account, ACCOUNT_SETTINGS),
        "senders": [
            {
                "code": sender.code,
                "handler_url": sender.handler_url,
                **config.export_settings(sender, SENDER_SETTINGS),
            }
            for sender in sorted(account.senders.all(), key=lambda s: s.code)
        ],
    }


class SmsSection:
    key = "sms"
    parse = staticmethod(parse)
    apply = staticmethod(apply)
    export = staticmethod(export)


SECTION = config.register(SmsSection())
