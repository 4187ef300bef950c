"""Connection files: how a local client proves it belongs to the user who started the server.

In the manner of jupyter_client's kernel connection files: `musebridge serve` makes a random key and writes it,
with its endpoints, to `engine-<port>.json` in a runtime folder only its user can enter (0700; the file 0600),
and refuses every request that does not carry the key (`unauthorized`). A client finds the file of the
endpoint it talks to and sends the key with each request (engine/server/client.py), so programs of the same user
(`play`, `ctl`, scripts) need no setting, and other local users, who cannot read the file, are refused.
The file is removed when the server stops; a file whose server is gone is ignored and removed by the next
server. A server with CURVE keys (`--keys`, for other machines) authenticates by those instead.

Runtime folder: $MUSEBRIDGE_RUNTIME_DIR, else $XDG_RUNTIME_DIR/musebridge, else ~/.local/share/musebridge/runtime.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from urllib.parse import urlparse

from ..errors import EngineError
from ..files import atomic_write

KEY_BYTES = 32  # the key is 64 hex digits


def runtime_dir() -> Path:
    """The folder connection files live in (not created here)."""
    if os.environ.get("MUSEBRIDGE_RUNTIME_DIR"):
        return Path(os.environ["MUSEBRIDGE_RUNTIME_DIR"])
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / "musebridge"
    return Path.home() / ".local" / "share" / "musebridge" / "runtime"


def new_key() -> str:
    return secrets.token_hex(KEY_BYTES)


def _private_folder() -> Path:
    folder = runtime_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if folder.stat().st_uid != os.getuid():
        raise EngineError(f"{folder}: the connection-file folder belongs to another user; set "
                          "MUSEBRIDGE_RUNTIME_DIR to a folder of your own")
    os.chmod(folder, 0o700)
    return folder


def write_connection(info: dict) -> Path:
    """Write a connection file (mode 0600, atomically) for a server: info holds its endpoints and key."""
    folder = _private_folder()
    for stale in folder.glob("engine-*.json"):  # left by servers that were killed
        try:
            if not process_alive(json.loads(stale.read_text()).get("pid")):
                stale.unlink(missing_ok=True)
        except (OSError, ValueError, AttributeError):
            continue
    name = f"engine-{info.get('port') or info.get('direct_port') or os.getpid()}.json"
    text = json.dumps({**info, "pid": os.getpid()}, indent=1)

    def make(tmp: Path) -> None:
        tmp.write_text(text)

    return atomic_write(folder / name, make, mode=0o600)


def process_alive(pid) -> bool:
    """True when a process with this id runs (someone else's counts); False for a bad id."""
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True


def _matches(info: dict, endpoint: str) -> bool:
    url = urlparse(endpoint)
    if url.scheme in ("tcp", "direct"):
        port = url.port
        return port is not None and port in (info.get("port"), info.get("direct_port"))
    if url.scheme == "unix":
        return info.get("local") is not None and os.path.abspath(info["local"]) == os.path.abspath(
            endpoint[len("unix://"):])
    if url.scheme == "ipc":
        return info.get("ipc") is not None and endpoint.startswith(f"ipc://{info['ipc']}/")
    return False


def find_key(endpoint: str) -> str | None:
    """The key of the live server whose connection file lists `endpoint` (None: no such file readable)."""
    folder = runtime_dir()
    try:
        paths = sorted(folder.glob("engine-*.json"))
    except OSError:
        return None
    for path in paths:
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(info, dict) and _matches(info, endpoint) and process_alive(info.get("pid")):
            key = info.get("key")
            return key if isinstance(key, str) else None
    return None


def remove_connection(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)
