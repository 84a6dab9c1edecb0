"""The embedded mode (`make run`) from outside: real `manage.py` processes in a clean
environment (no DEBUG, keys, DATABASE_URL or REDIS_URL) on SQLite under a temporary VAR_DIR.

The README's commands must work as written right after `make run`, with keys generated once
and reused; `manage.py serve` must stay up, hide debug pages, restart a killed child and keep
answering while slow clients hold connections open.
"""

import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from bitrixapp import keyfiles
from bitrixapp.settings import LEGACY_DEV_FIELD_KEY

pytestmark = pytest.mark.embedded

ROOT = Path(__file__).resolve().parents[2]


def clean_env(var_dir: Path, **extra: str) -> dict[str, str]:
    """What a fresh shell has: no setting of ours, whatever the test run itself uses."""
    keep = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    return {**keep, "VAR_DIR": str(var_dir), **extra}


def manage(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"manage.py {' '.join(args)}:\n{result.stderr[-3000:]}"
    return result.stdout


STORE_PORTAL = """
from bitrixapp.models import Portal
Portal.objects.create(member_id="m-embedded", domain="embedded.bitrix24.ru",
    client_endpoint="https://embedded.bitrix24.ru/rest/", access_token="tok-run-1")
"""
READ_SECRETS = """
from bitrixapp.models import Portal
from telephony.models import PbxConnection
print(Portal.objects.get(member_id="m-embedded").access_token)
print(PbxConnection.objects.get(name="Office").credentials["api_key"])
"""
CONFIG = """portal: embedded.bitrix24.ru
pbx:
  - name: Office
    provider: mango
    credentials: {api_key: key-run-1, api_salt: salt-run-1}
"""


def key_files(var_dir: Path) -> dict[str, tuple[str, int]]:
    paths = (var_dir / "secret_key", var_dir / "field_encryption_keys")
    return {p.name: (p.read_text(), p.stat().st_mode & 0o777) for p in paths}


def test_readme_commands_work_in_a_fresh_shell_with_keys_generated_once(tmp_path: Path) -> None:
    var = tmp_path / "var"
    env = clean_env(
        var,
        DJANGO_SUPERUSER_USERNAME="admin",
        DJANGO_SUPERUSER_PASSWORD="a-long-password-1",
        DJANGO_SUPERUSER_EMAIL="admin@example.com",
    )
    manage(env, "migrate", "--noinput")
    first = key_files(var)
    assert {mode for _, mode in first.values()} == {0o600}
    assert len(keyfiles.parse_field_keys(first["field_encryption_keys"][0])) == 1

    manage(env, "createsuperuser", "--noinput")
    manage(env, "shell", "-v", "0", "-c", STORE_PORTAL)
    (tmp_path / "acme.yaml").write_text(CONFIG)
    assert "imported" in manage(env, "import_config", str(tmp_path / "acme.yaml"))
    exported = json.loads(manage(env, "export_config", "--portal", "embedded.bitrix24.ru"))
    assert [c["name"] for c in exported["pbx"]] == ["Office"]
    manage(env, "check")

    # Every process decrypts what another encrypted: the keys were made once and reused.
    assert manage(env, "shell", "-v", "0", "-c", READ_SECRETS).split() == ["tok-run-1", "key-run-1"]
    assert key_files(var) == first
    with sqlite3.connect(var / "db.sqlite3") as db:
        (stored,) = db.execute("SELECT access_token FROM bitrixapp_portal").fetchone()
    assert stored and "tok-run-1" not in stored


def test_an_existing_database_keeps_the_old_development_key_for_reading(tmp_path: Path) -> None:
    var = tmp_path / "var"
    var.mkdir()
    (var / "db.sqlite3").touch()  # left by a version that encrypted with the public dev key
    manage(clean_env(var), "check")
    keys = keyfiles.parse_field_keys((var / "field_encryption_keys").read_text())
    assert len(keys) == 2
    assert keys[1] == LEGACY_DEV_FIELD_KEY


def test_an_external_database_requires_keys_from_the_environment(tmp_path: Path) -> None:
    env = clean_env(tmp_path / "var", DATABASE_URL="postgres://nobody@127.0.0.1:1/none")
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DATABASE_URL is set" in result.stderr
    assert not (tmp_path / "var" / "secret_key").exists()


# --- manage.py serve ---------------------------------------------------------------------


def free_port() -> int:
    for port in range(18400, 18999):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 18400-18999")


class Serve:
    """`manage.py serve` as `make run` starts it, its output in a file."""

    def __init__(self, tmp: Path):
        self.var_dir = tmp / "var"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / "serve.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "serve"],
            cwd=ROOT,
            env=clean_env(self.var_dir, PORT=str(self.port)),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a terminal's Ctrl-C reaches serve alone; so here
        )

    def output(self) -> str:
        return self.log_path.read_text()

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 90) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.findall(pattern, self.output(), re.MULTILINE)
            if len(found) >= count:
                return found
            assert self.proc.poll() is None, f"serve exited:\n{self.output()[-3000:]}"
            time.sleep(0.2)
        raise AssertionError(f"no {pattern!r} x{count} in:\n{self.output()[-3000:]}")

    def child_pids(self, name: str) -> list[int]:
        return [
            int(p)
            for p in re.findall(rf"^\S+ {name} +\| started \(pid (\d+)\)", self.output(), re.M)
        ]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        for name in ("web", "worker", "sms", "dispatcher", "beat"):
            for pid in self.child_pids(name):
                _kill_group(pid)
        self._log.close()


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    server = Serve(tmp_path_factory.mktemp("serve"))
    try:
        server.wait_for(r"worker@\S+ ready\.")
        server.wait_for(r"dispatcher@\S+ ready\.")
        server.wait_for(r"sms@\S+ ready\.")
        server.wait_for(r"Listening at: ")
        yield server
    finally:
        server.stop()


def get(url: str) -> requests.Response:
    return requests.get(url, timeout=10)


def test_serve_answers_without_debug_pages_and_serves_admin_static(serve: Serve) -> None:
    assert get(f"{serve.url}/healthz").json() == {"status": "ok"}

    missing = get(f"{serve.url}/no/such/page")
    assert missing.status_code == 404
    assert "URLconf" not in missing.text and "DEBUG = True" not in missing.text

    login = get(f"{serve.url}/admin/login/")
    assert login.status_code == 200
    (css,) = re.findall(r'href="(/static/admin/css/base\.[0-9a-f]+\.css)"', login.text)
    assert get(serve.url + css).status_code == 200  # WhiteNoise, from collectstatic's manifest


def test_slow_clients_do_not_stop_the_server_answering(serve: Serve) -> None:
    body = b"event=ONAPPINSTALL&" + b"x" * 20000
    slow = []
    for _ in range(2):
        sock = socket.create_connection(("127.0.0.1", serve.port))
        sock.sendall(
            b"POST /bitrix/events/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body[: len(body) // 2]
        )
        slow.append(sock)
    try:
        time.sleep(0.5)  # let the server take both up and start reading their bodies
        for _ in range(3):
            assert get(f"{serve.url}/healthz").status_code == 200
    finally:
        for sock in slow:
            sock.close()


def test_the_logs_keep_webhook_urls_without_their_secrets(serve: Serve) -> None:
    """gunicorn's access line and Django's "Not Found" line both name the route, not the
    webhook's UUID or a query's values (bitrixapp/logsafe.py)."""
    hook = "3f1c2a9e-5b7d-4e8a-9c0f-1a2b3c4d5e6f"
    answer = requests.post(
        f"{serve.url}/telephony/hooks/{hook}/?api_key=topsecret", json={}, timeout=10
    )
    assert answer.status_code == 404
    serve.wait_for(r'"POST /telephony/hooks/\*\*\*/\?api_key=\*\*\* HTTP/1\.1" 404')
    serve.wait_for(r"Not Found: /telephony/hooks/\*\*\*/")
    assert hook not in serve.output() and "topsecret" not in serve.output()


MANGO_CONNECTION = """
from bitrixapp.models import Portal
from telephony.models import PbxConnection
portal = Portal.objects.create(member_id="m-serve", domain="serve.bitrix24.ru",
    client_endpoint="https://serve.bitrix24.ru/rest/", access_token="tok")
print(PbxConnection.objects.create(portal=portal, name="Office", provider="mango",
    credentials={"api_key": "k-serve", "api_salt": "s-serve"}, default_user_id=1).webhook_uuid)
"""
DEACTIVATE = (
    "from telephony.models import PbxConnection; PbxConnection.objects.update(is_active=False)"
)


def test_pbx_webhooks_are_stored_on_sqlite_also_once_the_connection_is_remembered(
    serve: Serve,
) -> None:
    """On one kept-alive connection (one web process): the first webhook looks the connection
    up, the next ones are stored under the guard that it did not change (an INSERT ... SELECT
    ... WHERE EXISTS, written for SQLite without casts); a deactivation is seen at once."""
    from tests.fakes.mango import fixture, signed_body

    env = clean_env(serve.var_dir)
    hook = manage(env, "shell", "-c", MANGO_CONNECTION).split()[-1]  # after Django's notices
    url = f"{serve.url}/telephony/hooks/{hook}/events/call"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    names = ("call__appeared_inbound", "call__connected", "call__disconnected")
    with requests.Session() as http:
        for name in names:
            body = signed_body("k-serve", "s-serve", fixture(name)["json"])
            answer = http.post(url, data=body, headers=form, timeout=10)
            assert answer.status_code == 200 and answer.json()["status"] == "accepted", answer.text
        manage(env, "shell", "-c", DEACTIVATE)
        body = signed_body("k-serve", "s-serve", fixture("summary__inbound_answered")["json"])
        assert http.post(url, data=body, headers=form, timeout=10).status_code == 404


def test_a_killed_worker_is_restarted_while_the_web_server_keeps_answering(serve: Serve) -> None:
    # The newest worker: the supervisor may already have restarted one (a slow CI machine),
    # and this test is about the restart it does next, not about how many came before.
    worker = serve.child_pids("worker")[-1]
    (web,) = serve.child_pids("web")
    ready_before = len(re.findall(r"worker@\S+ ready\.", serve.output()))
    os.kill(worker, signal.SIGKILL)

    answers = []
    deadline = time.monotonic() + 90
    while len(re.findall(r"worker@\S+ ready\.", serve.output())) <= ready_before:
        assert time.monotonic() < deadline, serve.output()[-3000:]
        answers.append(get(f"{serve.url}/healthz").status_code)
        time.sleep(0.2)

    assert set(answers) == {200}
    assert "worker     | exited (killed by SIGKILL); restarting in 1 s" in serve.output()
    assert serve.child_pids("worker")[-1] != worker
    assert alive(serve.child_pids("worker")[-1]) and alive(web)
    assert serve.child_pids("web") == [web]  # the web server was never restarted


def test_ctrl_c_stops_every_process(serve: Serve) -> None:
    children = [
        pid
        for name in ("web", "worker", "sms", "dispatcher", "beat")
        for pid in serve.child_pids(name)
    ]
    os.kill(serve.proc.pid, signal.SIGINT)
    assert serve.proc.wait(30) == 0
    assert not [pid for pid in children if alive(pid)]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{serve.url}/healthz", timeout=2)


SUPERVISE = """
import sys
from bitrixapp.supervisor import Supervisor
py = sys.executable
sys.exit(Supervisor({
    "crashy": [py, "-c", "print('up', flush=True); raise SystemExit(3)"],
    "steady": [py, "-c", "import time; print('up', flush=True); time.sleep(600)"],
}, out=sys.stdout).run())
"""


def test_a_crashing_child_is_restarted_with_a_growing_pause_and_the_others_left_alone(
    tmp_path: Path,
) -> None:
    log = tmp_path / "supervise.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", SUPERVISE],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while "restarting in 4 s" not in log.read_text():
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(20) == 0
    finally:
        _kill_group(proc.pid)
    text = log.read_text()
    pauses = re.findall(r"crashy \| exited \(exit code 3\); restarting in (\d+) s", text)
    assert pauses[:3] == ["1", "2", "4"]
    assert len(re.findall(r"steady \| started", text)) == 1
    assert re.search(r"crashy \| up$", text, re.M) and re.search(r"steady \| up$", text, re.M)
    assert "stopping steady" in text or "stopping crashy, steady" in text
