"""`musebridge ports`: the MIDI inputs and outputs of each MIDI API (what --in / --out / --api can name)."""

from __future__ import annotations

import argparse

from musebridge.bridge.errors import PortError
from musebridge.bridge.rtmidi_ports import API_NAMES, RtmidiBackend, api_usable, compiled_apis


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api", choices=tuple(API_NAMES), help="only this MIDI API (default: every one built in)")


def listing(api: str) -> list[str]:
    """Lines describing one API's ports."""
    if not api_usable(api):
        hint = " (start JACK, e.g. `jackd -d dummy`)" if api == "jack" else ""
        return [f"{api}: not available{hint}"]
    try:
        backend = RtmidiBackend(api)
        inputs, outputs = backend.inputs(), backend.outputs()
    except PortError as exc:
        return [f"{api}: {exc}"]
    lines = [f"{api}:"]
    lines += ["  inputs (--in):"] + [f"    {name}" for name in inputs or ["(none)"]]
    lines += ["  outputs (--out):"] + [f"    {name}" for name in outputs or ["(none)"]]
    return lines


def run(args: argparse.Namespace) -> int:
    apis = [args.api] if args.api else compiled_apis()
    for api in apis:
        if api not in compiled_apis():
            print(f"{api}: not built into this python-rtmidi (it has: {', '.join(compiled_apis())})")
            continue
        print("\n".join(listing(api)))
    print("Without --in/--out, `musebridge play` creates virtual ports 'MuseBridge In' and 'MuseBridge Out'.")
    return 0
