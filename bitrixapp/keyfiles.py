"""Secrets generated on first run and kept in files under VAR_DIR (embedded mode, `make run`).

A key file is written once, readable by its owner only (0600), and read by every later run and
every process (web, workers, beat, management commands), so they all share one SECRET_KEY and
one set of encryption keys without any environment variable. It is created atomically: the
processes of `make run` may load the settings at the same moment, and a reader must never see
a half-written key (a second key would make the first one's ciphertext unreadable).
"""

import os
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path

from cryptography.fernet import Fernet


def read_or_create(path: Path, generate: Callable[[], str]) -> str:
    """The file's content; on first use, `generate()` is written to it (mode 0600)."""
    if not path.exists():
        _create(path, generate())
    return path.read_text(encoding="utf-8")


def _create(path: Path, content: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        # link() fails if the name exists: whoever links first wins, the others read theirs.
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


def new_secret_key() -> str:
    return secrets.token_urlsafe(50) + "\n"


def new_field_keys(legacy_key: str | None = None) -> str:
    """One Fernet key; with `legacy_key`, that one too (second: decrypt only) and a note why."""
    text = (
        "# FIELD_ENCRYPTION_KEYS, one per line, newest first (the first encrypts, all decrypt).\n"
        "# Back this file up with the database: without it the stored secrets are unreadable.\n"
        f"{Fernet.generate_key().decode()}\n"
    )
    if legacy_key:
        text += (
            "# The public development key of earlier versions, kept so that values stored with\n"
            "# it stay readable: run `.venv/bin/python manage.py rotate_encryption_keys`, then\n"
            "# delete this line and the next.\n"
            f"{legacy_key}\n"
        )
    return text


def parse_field_keys(text: str) -> list[str]:
    """Keys, newest first, from the environment's comma-separated list or a key file's lines."""
    lines = (line for line in text.splitlines() if not line.lstrip().startswith("#"))
    keys = (key.strip() for line in lines for key in line.split(","))
    return [key for key in keys if key]
