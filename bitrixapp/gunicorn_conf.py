"""gunicorn settings of the web process, shared by `make run` and docker/ (`-c python:...`).

Threaded workers (gthread): a client that sends its body slowly, or not at all, holds one
thread, not a whole worker, so /healthz and the webhooks of other clients keep being answered.
With the sync worker two such connections were enough to stop `make run` answering. In
production a buffering reverse proxy (docker/Caddyfile) in front receives whole requests first.
WEB_WORKERS and WEB_THREADS size it; the command line may override anything here.

Three processes of four threads by default, not two of eight: a kept-alive connection stays
with the worker that accepted it, and all of a client's connections opened at once may land on
one worker (seen with 8: one worker at a full core behind its GIL, the other idle, half the
throughput). With more processes than a small machine's cores such an imbalance still keeps
every core busy.
"""

import gc
import os
from typing import Any

from gunicorn.glogging import Logger

from bitrixapp.logsafe import masked, masked_query

worker_class = "gthread"
workers = int(os.environ.get("WEB_WORKERS", "3"))
threads = int(os.environ.get("WEB_THREADS", "4"))
# A worker that stops reporting for this long (stuck, not merely busy: gthread reports from
# its main thread) is killed and replaced.
timeout = 30
# On restart or shutdown, requests in progress get this long to finish.
graceful_timeout = 20
# Idle keep-alive connections wait in the worker's poller, not in a thread, and close after this.
keepalive = 5
# Caps against oversized headers (the body cap is WEBHOOK_MAX_BODY_BYTES in the app).
limit_request_line = 8190
limit_request_fields = 100
accesslog = "-"

# gunicorn 25+ opens a control socket at one path per user ($HOME/.gunicorn/gunicorn.ctl):
# a second instance (tests, another checkout) would take it over. Nothing here uses it.
control_socket_disable = True


def post_worker_init(worker: Any) -> None:
    """Once the worker has loaded the app: import every view, then move all objects that live
    as long as the process out of the garbage collector's sight (gc.freeze). A full collection
    walked them all, 55-80 ms with the GIL held (measured at 500 webhooks/s), and every request
    in that worker waited as long. Frozen, the same collection takes 4-11 ms."""
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 - the URLconf imports the views
    gc.freeze()


class MaskedAccessLog(Logger):
    """gunicorn's logger, with the secrets of webhook URLs and query values hidden in the
    access log (bitrixapp/logsafe.py): the default line carries the whole request line."""

    URL_ATOMS = ("r", "U", "f", "{raw_uri}e", "{path_info}e", "{request_uri}e")
    QUERY_ATOMS = ("q", "{query_string}e")

    def atoms(self, resp: Any, req: Any, environ: dict, request_time: Any) -> dict:
        atoms = super().atoms(resp, req, environ, request_time)
        for key in self.URL_ATOMS:
            if isinstance(atoms.get(key), str):
                atoms[key] = masked(atoms[key])
        for key in self.QUERY_ATOMS:
            if isinstance(atoms.get(key), str):
                atoms[key] = masked_query(atoms[key])
        return atoms


logger_class = MaskedAccessLog
