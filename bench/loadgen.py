"""HTTP load generators for the events benchmark: wrk when available, else Python threads.

Both run closed-loop: a fixed number of keep-alive connections, each sending the next
request as soon as the previous answer arrived, for a fixed duration. Both report the
same `LoadResult`.
"""

import http.client
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

from bench.env import RESULTS_DIR


@dataclass
class LoadResult:
    tool: str
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)  # python generator only
    raw: str = ""


def find_wrk() -> str | None:
    """wrk's path; installs the Debian package (as root) when it is missing."""
    path = shutil.which("wrk")
    if path is None and shutil.which("apt-get"):
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "wrk"],
            capture_output=True,
            check=False,
            timeout=180,
        )
        path = shutil.which("wrk")
    return path


# ---------------------------------------------------------------- wrk

_LUA = """wrk.method = "POST"
wrk.body = "{body}"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["X-Forwarded-Proto"] = "https"
"""


def run_wrk(
    wrk: str, url: str, body: str, connections: int, duration_s: int, threads: int = 1
) -> LoadResult:
    script = RESULTS_DIR / "events-post.lua.tmp"
    script.write_text(_LUA.format(body=body.replace("\\", "\\\\").replace('"', '\\"')))
    argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", "--latency"]
    argv += ["--timeout", "5s", "-s", str(script), url]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


def parse_wrk(out: str) -> LoadResult:
    done = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    if done is None:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    duration = float(done.group(2)) * (0.001 if done.group(3) == "ms" else 1.0)
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return LoadResult(
        tool="wrk",
        requests=int(done.group(1)),
        duration_s=duration,
        rps=float(_find(r"Requests/sec:\s+([\d.]+)", out)),
        p50_ms=_ms(_find(r"^\s+50%\s+(\S+)", out)),
        p99_ms=_ms(_find(r"^\s+99%\s+(\S+)", out)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        errors=errors,
        raw=out,
    )


def _find(pattern: str, text: str) -> str:
    match = re.search(pattern, text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"wrk output has no {pattern!r}:\n{text}")
    return match.group(1)


def _ms(value: str) -> float:
    """wrk's '12.34ms' / '1.20s' / '850.00us' in milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if match is None:
        raise RuntimeError(f"unexpected wrk duration {value!r}")
    number, unit = match.groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


# ---------------------------------------------------------------- Python fallback


def run_python(url: str, body: str, connections: int, duration_s: int) -> LoadResult:
    """Threads with one keep-alive http.client connection each (GIL-bound: a lower bound)."""
    parts = urlsplit(url)
    deadline = time.monotonic() + duration_s
    latencies: list[list[float]] = [[] for _ in range(connections)]
    statuses: list[dict[int, int]] = [{} for _ in range(connections)]
    errors = [0] * connections
    started = time.monotonic()
    threads = [
        threading.Thread(
            target=_client,
            args=(parts, body, deadline, latencies[i], statuses[i], errors, i),
            daemon=True,
        )
        for i in range(connections)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    flat = sorted(x for per in latencies for x in per)
    merged: dict[int, int] = {}
    for per in statuses:
        for code, n in per.items():
            merged[code] = merged.get(code, 0) + n
    return LoadResult(
        tool="python-threads",
        requests=len(flat),
        duration_s=elapsed,
        rps=len(flat) / elapsed,
        p50_ms=_pct(flat, 0.50),
        p99_ms=_pct(flat, 0.99),
        non_2xx=sum(n for code, n in merged.items() if not 200 <= code < 300),
        errors=sum(errors),
        statuses=merged,
    )


def _client(
    parts: SplitResult,
    body: str,
    deadline: float,
    latencies: list[float],
    statuses: dict[int, int],
    errors: list[int],
    index: int,
) -> None:
    conn = http.client.HTTPConnection(parts.netloc, timeout=5)
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Forwarded-Proto": "https",
    }
    payload = body.encode()
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        try:
            conn.request("POST", parts.path, payload, headers)
            reply = conn.getresponse()
            reply.read()
        except (OSError, http.client.HTTPException):
            errors[index] += 1
            conn.close()
            continue
        latencies.append((time.monotonic() - t0) * 1000)
        statuses[reply.status] = statuses.get(reply.status, 0) + 1
    conn.close()


def _pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def save_raw(name: str, text: str) -> Path:
    path = RESULTS_DIR / f"{name}.txt.tmp"
    path.write_text(text)
    return path
