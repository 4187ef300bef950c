"""`musebridge keys DIR`: make CURVE key pairs for a server that listens beyond loopback.

DIR/server.key(_secret) is the server's pair, DIR/client.key(_secret) a client's pair, and DIR/authorized/ holds
the public keys of the clients the server accepts (the new client's key is put there). Copy DIR/server.key and
the client pair to the client machine; add more clients with `musebridge keys DIR --client NAME`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", metavar="DIR", help="folder for the keys (created)")
    parser.add_argument("--client", default="client", metavar="NAME",
                        help="name of the client key pair to add (default: client)")


def make_keys(folder: Path, client: str = "client") -> list[Path]:
    """Create the server pair (once) and a client pair authorized by the server; returns the files made."""
    import zmq.auth  # noqa: PLC0415

    authorized = folder / "authorized"
    authorized.mkdir(parents=True, exist_ok=True)
    made = []
    if not (folder / "server.key_secret").exists():
        made += [Path(p) for p in zmq.auth.create_certificates(folder, "server")]
    made += [Path(p) for p in zmq.auth.create_certificates(folder, client)]
    shutil.copy(folder / f"{client}.key", authorized / f"{client}.key")
    (folder / "server.key_secret").chmod(0o600)
    (folder / f"{client}.key_secret").chmod(0o600)
    return made + [authorized / f"{client}.key"]


def run(args: argparse.Namespace) -> int:
    if not args.client.isidentifier():
        print(f"musebridge keys: client name {args.client!r} must be letters, digits and _", file=sys.stderr)
        return 2
    try:
        made = make_keys(Path(args.folder), args.client)
    except OSError as exc:
        print(f"musebridge keys: cannot write keys in {args.folder}: {exc.strerror}", file=sys.stderr)
        return 2
    for path in made:
        print(path)
    print(f"start the server with: musebridge serve --host 0.0.0.0 --keys {args.folder}")
    return 0
