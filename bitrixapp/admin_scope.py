"""One portal per admin login: the mixin every ModelAdmin of the project uses.

A Bitrix24 portal admin who opens the Django admin from the app page is logged in as a Django
user linked to that portal (`PortalStaff`). Such a user sees and edits only rows whose
`portal_path` leads to their portal: lists, detail pages (another portal's object is a 404),
foreign-key choices, autocomplete, list filters, actions and "select all". Superusers (the
operator who hosts the service) see everything. Any other login sees nothing.

    @admin.register(SmsSender)
    class SmsSenderAdmin(PortalScoped, admin.ModelAdmin):
        portal_path = "account__portal"            # how a row reaches its Portal
        portal_permissions = ("view", "change")    # what a portal admin may do here

`portal_path = ""` marks the Portal model itself; `portal_path = OPERATORS_ONLY` keeps a model
away from portal admins entirely. tests/bitrixapp/test_admin_scope.py walks every registered
admin and fails for one that does not declare its scope.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin import RelatedOnlyFieldListFilter
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.db import models
from django.http import Http404, HttpRequest

from bitrixapp.models import Portal, PortalStaff

OPERATORS_ONLY = "<operators only>"
ALL_PERMISSIONS = ("view", "add", "change", "delete")


def staff_portal(request: HttpRequest) -> Portal | None:
    """The portal a logged-in portal admin belongs to; None for superusers and strangers."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or user.is_superuser:
        return None
    if not hasattr(request, "_staff_portal"):
        link = PortalStaff.objects.select_related("portal").filter(user=user).first()
        request._staff_portal = link.portal if link else None
    return request._staff_portal


def scope_of(model_admin: Any) -> str | None:
    """The declared path of an admin to the portal (None: not declared)."""
    return getattr(model_admin, "portal_path", None)


def scoped(queryset: models.QuerySet, path: str | None, request: HttpRequest) -> models.QuerySet:
    """`queryset` as `request`'s user may see it, rows reaching the portal through `path`."""
    if request.user.is_superuser:
        return queryset
    portal = staff_portal(request)
    if portal is None or path is None or path == OPERATORS_ONLY:
        return queryset.none()
    return queryset.filter(**{path or "pk": portal.pk})


class PortalScoped:
    """Mix in before admin.ModelAdmin (or an InlineModelAdmin)."""

    portal_path: str | None = None
    portal_permissions: tuple[str, ...] = ALL_PERMISSIONS

    def check(self, **kwargs: Any) -> list:
        if self.portal_path is None:
            raise ImproperlyConfigured(f"{type(self).__name__} must declare portal_path")
        return super().check(**kwargs)

    # -------------------------------------------------------- rows

    def get_queryset(self, request: HttpRequest) -> models.QuerySet:
        return scoped(super().get_queryset(request), self.portal_path, request)

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None):
        # Django redirects to the index for a missing object; another portal's object must
        # look exactly like one that does not exist: 404.
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            raise Http404("no such object")
        return obj

    # -------------------------------------------------------- choices and filters

    def _related_scope(self, request: HttpRequest, queryset: models.QuerySet) -> models.QuerySet:
        model = queryset.model
        if model is Portal:
            return scoped(queryset, "", request)
        related_admin = self.admin_site._registry.get(model)
        # A model with no scoped admin offers no choices to a portal admin: fail closed.
        return scoped(queryset, scope_of(related_admin), request)

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any):
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if field is not None and staff_portal(request) is not None:
            field.queryset = self._related_scope(request, field.queryset)
            if field.queryset.model is Portal:
                field.empty_label = None  # their one portal, preselected
        return field

    def formfield_for_manytomany(self, db_field: Any, request: HttpRequest, **kwargs: Any):
        field = super().formfield_for_manytomany(db_field, request, **kwargs)
        if field is not None and staff_portal(request) is not None:
            field.queryset = self._related_scope(request, field.queryset)
        return field

    def get_list_filter(self, request: HttpRequest) -> list:
        """A related-field filter lists every row of the related table: a portal admin gets
        only the values their own rows use, and no portal filter at all."""
        filters = list(super().get_list_filter(request))
        if request.user.is_superuser:
            return filters
        return [self._scoped_filter(f) for f in filters if f != "portal"]

    def _scoped_filter(self, entry: Any) -> Any:
        if not isinstance(entry, str):
            return entry
        try:
            field = self.model._meta.get_field(entry)
        except FieldDoesNotExist:
            return entry
        return (entry, RelatedOnlyFieldListFilter) if field.is_relation else entry

    # -------------------------------------------------------- permissions

    def _portal_may(self, request: HttpRequest, action: str) -> bool | None:
        """None: not a portal admin, Django's own permissions decide."""
        if request.user.is_superuser or staff_portal(request) is None:
            return None
        return self.portal_path != OPERATORS_ONLY and action in self.portal_permissions

    def has_module_permission(self, request: HttpRequest) -> bool:
        may = self._portal_may(request, "view")
        return super().has_module_permission(request) if may is None else may

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        may = self._portal_may(request, "view")
        return super().has_view_permission(request, obj) if may is None else may

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        may = self._portal_may(request, "add")
        return super().has_add_permission(request, *args) if may is None else may

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        may = self._portal_may(request, "change")
        return super().has_change_permission(request, obj) if may is None else may

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        may = self._portal_may(request, "delete")
        return super().has_delete_permission(request, obj) if may is None else may


class OperatorsOnlyAdmin(PortalScoped, admin.ModelAdmin):
    portal_path = OPERATORS_ONLY
