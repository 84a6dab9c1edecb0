"""How many web workers and threads (bitrixapp/gunicorn_conf.py)."""

import importlib

from bitrixapp import gunicorn_conf


def test_workers_outnumber_two_cores_and_the_environment_sizes_them(monkeypatch):
    try:
        monkeypatch.delenv("WEB_WORKERS", raising=False)
        monkeypatch.delenv("WEB_THREADS", raising=False)
        shipped = importlib.reload(gunicorn_conf)
        assert (shipped.workers, shipped.threads) == (3, 4)
        monkeypatch.setenv("WEB_WORKERS", "5")
        monkeypatch.setenv("WEB_THREADS", "2")
        sized = importlib.reload(gunicorn_conf)
        assert (sized.workers, sized.threads) == (5, 2)
    finally:
        monkeypatch.undo()
        importlib.reload(gunicorn_conf)
