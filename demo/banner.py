"""The "demo" banner on every HTML page while `make demo` runs (settings.DEMO)."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

BANNER = (
    '<div id="demo-banner" style="position:sticky;top:0;z-index:10000;margin:0;'
    "padding:6px 12px;background:#ffd400;color:#222;font:bold 14px/1.4 sans-serif;"
    'text-align:center;border-bottom:2px solid #c9a700">'
    "DEMO — a fake Bitrix24 portal and a fake PBX on this machine; nothing here is real"
    "</div>"
)


class DemoBannerMiddleware:
    """Puts the banner right after `<body ...>` of every complete HTML answer; JSON answers
    (webhooks, the API) and streamed files are left alone."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.streaming or "text/html" not in response.get("Content-Type", ""):
            return response
        html = response.content.decode(response.charset or "utf-8", errors="replace")
        start = html.find("<body")
        end = html.find(">", start) if start >= 0 else -1
        if end < 0:
            return response
        response.content = (html[: end + 1] + BANNER + html[end + 1 :]).encode(response.charset)
        if response.has_header("Content-Length"):
            response["Content-Length"] = str(len(response.content))
        return response
