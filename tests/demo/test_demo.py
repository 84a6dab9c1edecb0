"""`make demo` run headless to the end: every scripted call (through Mango, MTT and a generic
JSON PBX) and the SMS reached the fake Bitrix24 exactly as the app's journal says; Ctrl-C
stops everything; the three pages it links open in a real browser (their screenshots are the
README's "See it work" pictures)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.bitrixapp.test_install_page import _chromium

ROOT = Path(__file__).resolve().parent.parent.parent
SCREENSHOTS = ROOT / "docs" / "screenshots"
PORT = int(os.environ.get("DEMO_TEST_PORT", "19412"))

pytestmark = pytest.mark.worker


def start_demo(work: Path, port: int, *extra: str) -> tuple[dict, subprocess.Popen]:
    """The demo as `make demo` runs it, on ports of its own, until its report is written."""
    report = work / "report.json"
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    log = (work / "demo.log").open("w")
    argv = ["--port", str(port), "--var-dir", str(work / "demo"), "--report", str(report)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "demo", *argv, *extra],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 150
    while not report.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    if not report.exists():
        proc.kill()
        pytest.fail("the demo did not finish:\n" + (work / "demo.log").read_text()[-4000:])
    time.sleep(0.2)  # the report is written in one go; let the file close
    return json.loads(report.read_text()), proc


def stop_demo(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo-run")
    report, proc = start_demo(work, PORT)
    yield report, proc, work
    stop_demo(proc)


def test_the_busy_hour_shows_every_card_without_a_rate_limit_refusal(tmp_path):
    """SCENARIO=busy-hour: 50 calls at once, every card shown, batched, none refused."""
    report, proc = start_demo(tmp_path, PORT + 7, "--scenario", "busy-hour", "--once")
    stop_demo(proc)
    (figures,) = report["figures"]
    assert (figures["calls"], figures["cards"]) == (50, 50)
    assert figures["rate_limit_refusals"] == 0 and figures["batches"] >= 1
    assert figures["requests_to_bitrix24"] < figures["rest_methods_executed"]


EXPECTED = [  # per scripted call: PBX, card shown to, hidden from, finished for, status, records
    ("mango", [11, 12, 13], [11, 13], 12, "200", 0),  # ring group, Olga answers
    ("mango", [], [], 1, "304", 0),  # IVR only: missed, for the default user
    ("mango", [11, 12], [11], 12, "200", 0),  # transfer Ivan → Olga
    ("mango", [11], [], 11, "304", 0),  # 4 s talk, under the 10 s minimum
    ("mango", [], [], 12, "200", 0),  # click-to-call: Bitrix24 registered it itself
    ("mango", [13], [], 13, "200", 0),  # callback form, for the CRM owner
    ("mango", [13], [], 13, "200", 1),  # the late recording
    # MTT group 500 is no employee: the default user's card until Olga answers.
    ("mtt", [1, 12], [1], 12, "200", 1),
    ("generic", [11, 12], [11], 12, "200", 1),  # the Asterisk rings Ivan and Olga
]
# The Bitrix24 line of each PBX (the demo's configuration gives each connection its own).
LINES = {"mango": "74951234567", "mtt": "78127654321", "generic": "74997001122"}


def test_every_scripted_call_reached_bitrix24_as_the_journal_says(demo):
    report, _proc, _work = demo
    calls = [c for c in report["calls"] if not c["sms_id"]]
    assert len(calls) == len(EXPECTED)
    for played, expected in zip(calls, EXPECTED, strict=True):
        pbx, shown, hidden, user, status, records = expected
        (journal,) = played["journal"]
        (received,) = played["received"]
        assert played["via"] == journal["pbx"] == pbx, played
        assert received["call_id"] == journal["b24_call_id"]
        assert received["line"] == journal["line_number"] == LINES[pbx], played
        assert received["finish"]["status"] == journal["status_code"] == status, played
        assert received["finish"]["duration"] == journal["duration"]
        assert received["finish"]["user"] == user
        assert (received["shown_to"], received["hidden_from"]) == (shown, hidden), played
        assert len(received["records"]) == journal["recordings_attached"] == records
    assert calls[4]["received"][0]["registered_by"] == "Bitrix24"


def test_the_sms_and_its_delivery_report_reached_bitrix24_as_the_journal_says(demo):
    report, _proc, _work = demo
    (sms,) = [c for c in report["calls"] if c["sms_id"]]
    assert sms["journal"] == [] and sms["received"] == []  # no call for an SMS
    journal = sms["sms_journal"]
    assert journal["message_id"] == sms["sms_id"] and journal["status"] == "delivered"
    # Every status change the app recorded was told to Bitrix24, once and in order.
    assert sms["sms_received"] == journal["history"] == ["sent", "delivered"]


def test_the_three_pages_open_in_a_browser(demo):
    report, _proc, work = demo
    links = report["links"]
    received = requests.get(links["received"], timeout=10).text
    assert received.count("200 answered") == 7 and received.count("304 missed") == 2
    for name in ("Sales · Mango", "SPb · MTT", "Warehouse · Asterisk"):
        assert name in received  # each call's line, so its PBX
    assert "messageservice.message.status.update" in received
    assert received.count("-sms</td><td>delivered") == 1
    # The README's screenshots are refreshed only when asked (SAVE_SCREENSHOTS=1): a test run
    # leaves tracked files alone.
    shots = SCREENSHOTS if os.environ.get("SAVE_SCREENSHOTS") == "1" else work
    shots.mkdir(parents=True, exist_ok=True)
    pages = {"app": links["app"], "journal": links["journal_login"], "received": links["received"]}
    heights = {"received": 1150}  # every call and the SMS statuses below them
    for name, url in pages.items():
        shot = shots / f"demo-{name}.png"
        shot.unlink(missing_ok=True)
        subprocess.run(
            [
                _chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--hide-scrollbars",
                f"--user-data-dir={work / name}",
                f"--window-size=1280,{heights.get(name, 800)}",
                "--virtual-time-budget=8000",
                f"--screenshot={shot}",
                url,
            ],
            capture_output=True,
            timeout=90,
            check=False,
        )
        assert shot.stat().st_size > 10_000, name
    # The browser used the one-time link; a second use is refused.
    assert requests.get(links["journal_login"], timeout=10).status_code == 403
    login_page = requests.get(links["journal"], timeout=10)
    assert "/admin/login/" in login_page.url and 'id="demo-banner"' in login_page.text


def test_ctrl_c_stops_everything(demo):
    _report, proc, _work = demo
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{PORT}/healthz", timeout=2)
