"""Every example in docs/generic-webhook.md is accepted by the endpoint of a running server.

The doc's code blocks are read from the file, their placeholder URL and secret replaced: the
curl example and the Asterisk helper script run in a real shell (curl, openssl), the Python
sender is executed, the dialplan's System() lines are run through the helper script with the
arguments they give, and the FreeSWITCH script's body format is filled the way Lua's
string.format would and sent signed as the script does."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from telephony.models import PbxConnection, PbxEvent

DOC = Path(__file__).resolve().parents[2] / "docs" / "generic-webhook.md"
PLACEHOLDER_URL = "https://app.example.com/telephony/hooks/00000000-0000-0000-0000-000000000000/"
PLACEHOLDER_SECRET = "change-me"
SECRET = "doc-secret"

pytestmark = pytest.mark.django_db(transaction=True)


def blocks(language: str) -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    fenced = re.findall(r"^```(\w*)\n(.*?)^```$", text, flags=re.S | re.M)
    return [code for lang, code in fenced if lang == language]


def localised(code: str, url: str) -> str:
    return code.replace(PLACEHOLDER_URL, url).replace(PLACEHOLDER_SECRET, SECRET)


@pytest.fixture
def hook_url(live_server, settings, make_portal) -> str:
    settings.APP_BASE_URL = live_server.url
    portal, _ = make_portal()
    connection = PbxConnection.objects.create(
        portal=portal, name="Doc", provider="generic", credentials={"secret": SECRET}
    )
    return connection.webhook_url


def accepted() -> list[PbxEvent]:
    return list(PbxEvent.objects.filter(state="received").order_by("pk"))


def test_the_doc_has_the_examples_it_promises():
    assert len(blocks("sh")) == 3  # curl, the Asterisk helper, replay_webhook
    assert len(blocks("python")) == 1 and len(blocks("lua")) == 1 and len(blocks("")) >= 1


def test_the_curl_example(hook_url):
    out = subprocess.run(
        ["sh", "-c", localised(blocks("sh")[0], hook_url)], capture_output=True, text=True
    )
    assert json.loads(out.stdout)["status"] == "accepted", out.stderr
    assert accepted()[0].events[0]["kind"] == "ringing"


def test_the_python_sender(hook_url):
    code = localised(blocks("python")[0], hook_url)
    namespace = {"URL": hook_url, "SECRET": SECRET}
    lines = [line for line in code.strip().splitlines() if line.strip()]
    assert len(lines) <= 10  # "a Python sender of ten lines"
    exec(code, namespace)  # noqa: S102 (the doc's own example, run as a user would)
    assert accepted()[0].events[0]["kind"] == "summary"


def test_the_asterisk_dialplan_through_its_helper_script(hook_url, tmp_path):
    script = tmp_path / "b24-event"
    # Run in the foreground so the test can wait for it (the doc backgrounds curl with &).
    script.write_text(localised(blocks("sh")[1], hook_url).replace(">/dev/null &", ""))
    dialplan = next(b for b in blocks("") if "exten =>" in b)
    variables = {
        "${NUM}": "79161234567",
        "${LINKEDID}": "1718600000.7",
        "${CALLERID(num)}": "79161234567",
        "${EXTEN}": "74951234567",
        "${CDR(billsec)}": "42",
        "${DIALSTATUS}": "ANSWER",
    }
    prefix = f"sh {script} {variables['${LINKEDID}']} 79161234567 74951234567"
    flow = ("ringing", "answered", "ended")  # the order Asterisk runs them in during a call
    lines = re.findall(r"System\((.*)\)", dialplan)
    lines.sort(key=lambda line: next(i for i, e in enumerate(flow) if f" {e} " in line))
    assert len(lines) == 3
    for line in lines:
        command = line.replace("${B24}", prefix).replace("/usr/local/bin/b24-event", f"sh {script}")
        command = re.sub(r"\$\{ARG\d\}", lambda m: "", command)
        for name, value in variables.items():
            command = command.replace(name, value)
        if "answered" in command:  # the Dial U() subroutine gets the ids as ARG1..ARG3
            command = f"{prefix} answered 101"
        out = subprocess.run(["sh", "-c", command], capture_output=True, text=True)
        assert '"accepted"' in out.stdout, (command, out.stdout, out.stderr)
    kinds = [row.events[0]["kind"] for row in accepted()]
    assert kinds == ["ringing", "answered", "summary"]
    assert accepted()[-1].events[0]["talk_seconds"] == 42

    # The caller's number is the caller's to choose: the dialplan filters it, and the script
    # refuses whatever a shell would read as syntax.
    assert "Set(NUM=${FILTER(0-9+,${CALLERID(num)})})" in dialplan
    assert "${CALLERID(num)}" not in dialplan.replace("${FILTER(0-9+,${CALLERID(num)})}", "")
    marker = tmp_path / "pwned"
    hostile = subprocess.run(
        ["sh", str(script), "1.1", f"1;touch {marker}", "74951234567", "ringing", "101"],
        capture_output=True,
        text=True,
    )
    assert hostile.returncode == 2 and not marker.exists()
    assert len(accepted()) == 3


def test_the_freeswitch_script_body(hook_url):
    lua = blocks("lua")[0]
    template = re.search(r"string\.format\('(.*?)'", lua).group(1)
    body = template.replace("%d", "%s") % (
        "fs-uuid-1",
        "ended",
        "79161234567",
        "74951234567",
        "101",
        42,
    )
    ts = str(int(time.time()))
    signature = hmac.new(SECRET.encode(), f"{ts}.{body}".encode(), hashlib.sha256).hexdigest()
    assert "openssl dgst -sha256 -hmac" in lua and "X-Signature: sha256=" in lua
    # Every value that reaches the shell command passes through safe() first.
    values = re.search(r"string\.format\('.*?',\s*(.*?)\)\n", lua, re.S).group(1)
    assert values.count("safe(") == 3 and "local event, ext = safe(argv[1]), safe(" in lua
    request = urllib.request.Request(
        hook_url,
        body.encode(),
        {
            "Content-Type": "application/json",
            "X-Timestamp": ts,
            "X-Signature": f"sha256={signature}",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert json.load(answer)["status"] == "accepted"
