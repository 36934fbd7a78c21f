"""Per-user bearer tokens. Only each token's SHA-256 is stored (``WORKDIR/tokens.json``, mode 0600);
the token itself is shown once, when it is made. Tokens are 256 random bits, so one unsalted hash
is enough (nothing to brute-force), and lookups compare hashes in constant time."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from pathlib import Path

from medfoundry import MedfoundryError
from medfoundry.utils.atomic import atomic_path

USER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
ADMIN = "admin"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenStore:
    """The users of one server work folder and their token hashes."""

    def __init__(self, workdir: Path) -> None:
        self.path = Path(workdir) / "tokens.json"
        self._lock = threading.Lock()
        self._users: dict[str, dict] = {}
        self._stamp: tuple[int, int] | None = None
        self._reload()

    def _reload(self) -> None:
        """Read the token file again when it changed (``--add-user`` while the server runs)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return
        stamp = (st.st_mtime_ns, st.st_ino)
        if stamp == self._stamp:
            return
        try:
            self._users = json.loads(self.path.read_text())["users"]
        except (OSError, ValueError, KeyError) as exc:
            raise MedfoundryError(f"{self.path}: unreadable token file ({exc})") from None
        self._stamp = stamp

    def users(self) -> list[str]:
        return sorted(self._users)

    def ensure_admin(self) -> str | None:
        """Make the ``admin`` user on first start: its new token (show it once), else None."""
        with self._lock:
            self._reload()
            if self._users:
                return None
        return self.add_user(ADMIN)

    def add_user(self, name: str) -> str:
        """A new token for user ``name`` (created, or its old token replaced): shown once only."""
        if not USER_NAME.match(name):
            raise MedfoundryError(
                f"user name '{name}': use 1-32 lower-case letters, digits, '-' or '_'"
            )
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._reload()
            self._users[name] = {"sha256": hash_token(token), "created": time.time()}
            self._save()
        return token

    def user_for(self, token: str | None) -> str | None:
        """The user holding ``token``, or None."""
        if not token:
            return None
        digest = hash_token(token)
        with self._lock:
            self._reload()
        found = None
        for name, entry in self._users.items():  # no early exit: time does not depend on position
            if hmac.compare_digest(entry["sha256"], digest):
                found = name
        return found

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({"users": self._users}, f, indent=2, sort_keys=True)
