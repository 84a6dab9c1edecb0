"""The demo's sign-in link (`make demo` only, settings.DEMO): the terminal prints
/demo/login/<token>/ with a one-time admin token of the demo portal's admin — the same token
the app page's "Open settings" button posts (bitrixapp.admin_login), so the journal opens
scoped to that portal. A link in a terminal is a GET; outside the demo the token only ever
travels in a POST body.
"""

from django.contrib.auth import login
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse

from bitrixapp import admin_login

JOURNAL = "/admin/telephony/call/"


def one_time_login(request: HttpRequest, token: str) -> HttpResponse:
    user = admin_login.redeem(token)
    if user is None:
        return JsonResponse(
            {"error": "forbidden", "detail": "this link was used, has expired or is wrong"},
            status=403,
        )
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    return HttpResponseRedirect(JOURNAL)
