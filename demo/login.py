"""The demo's one-time admin link (`make demo` only, settings.DEMO): the terminal prints
/demo/login/<token>/, which signs the demo admin in once and opens the call journal.

The token is signed with SECRET_KEY and expires after a day; the first use is remembered in
the cache (shared by the web processes), so a copied link does not work twice.
"""

from django.contrib.auth import get_user_model, login
from django.core import signing
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse

SALT = "demo.login"
MAX_AGE_S = 24 * 3600
JOURNAL = "/admin/telephony/call/"


def link_token(username: str) -> str:
    return signing.dumps(username, salt=SALT)


def one_time_login(request: HttpRequest, token: str) -> HttpResponse:
    try:
        username = signing.loads(token, salt=SALT, max_age=MAX_AGE_S)
    except signing.BadSignature:
        return JsonResponse({"error": "forbidden", "detail": "bad or expired link"}, status=403)
    if not cache.add(f"demo-login:{token}", True, MAX_AGE_S):
        return JsonResponse({"error": "forbidden", "detail": "this link was used"}, status=403)
    user = get_user_model().objects.get(username=username)
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    return HttpResponseRedirect(JOURNAL)
