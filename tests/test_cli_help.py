"""Every subcommand's --help works where only the live path is installed; a command needing an extra says so.

The optional extras' modules (torch, music21, onnx, transformers, ...) are hidden in a fresh interpreter
(`sys.modules[name] = None` makes `import name` fail as if it were not installed), as in the `make demo`
environment, which installs only the live path and matplotlib.
"""

from __future__ import annotations

import json
import subprocess
import sys

from musebridge.cli import EXTRAS

HIDDEN = sorted(set(EXTRAS) - {"matplotlib"})  # the demo environment has matplotlib (the viz extra)

# Runs in the child: every --help, nested subcommands included; prints one JSON line of results.
HELP_ALL = """
import argparse, contextlib, io, json, sys
for name in {hidden!r}:
    sys.modules[name] = None
from musebridge import cli

def nested(argv):
    parser, subparsers = cli.build_parser()
    module = __import__(cli.SUBCOMMANDS[argv[0]][0], fromlist=["run"])
    module.add_arguments(subparsers[argv[0]])
    return [a for a in subparsers[argv[0]]._actions if isinstance(a, argparse._SubParsersAction)]

results, silent = {{}}, []
todo = [[name] for name in cli.SUBCOMMANDS]
for name in cli.SUBCOMMANDS:
    for action in nested([name]):
        todo += [[name, sub] for sub in action.choices]
for argv in todo:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv + ["--help"])
        except SystemExit as exc:
            code = exc.code
        except BaseException as exc:
            code = repr(exc)
    results[" ".join(argv)] = [code, out.getvalue(), err.getvalue()]
    parser, subparsers = cli.build_parser()
    module = __import__(cli.SUBCOMMANDS[argv[0]][0], fromlist=["run"])
    module.add_arguments(subparsers[argv[0]])
    command = subparsers[argv[0]]
    for word in argv[1:]:
        command = next(a for a in command._actions if isinstance(a, argparse._SubParsersAction)).choices[word]
    silent += [" ".join(argv) + " " + (a.option_strings or [a.dest])[0] for a in command._actions
               if not a.help and a.dest != "help" and not isinstance(a, argparse._SubParsersAction)]
print(json.dumps({{"results": results, "silent": silent}}))
"""


def _run_hidden(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_every_help_works_without_the_extras():
    proc = _run_hidden(HELP_ALL.format(hidden=HIDDEN))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    results = report["results"]
    assert report["silent"] == [], "every option says what it does"
    assert {"train", "export", "eval", "bench decode", "corpus build", "play", "demo"} <= set(results)
    for argv, (code, out, err) in results.items():
        assert code == 0, f"musebridge {argv} --help: exit {code}\n{err}"
        assert "Traceback" not in out + err, f"musebridge {argv} --help:\n{err}"
        assert f"usage: musebridge {argv}" in out


def test_a_command_needing_the_train_extra_says_how_to_get_it(tmp_path):
    code = (f"import sys\nfor n in {HIDDEN!r}: sys.modules[n] = None\n"
            "from musebridge.cli import main\n"
            f"sys.exit(main(['train', '--data', {str(tmp_path)!r}, '--out', {str(tmp_path / 'run')!r}]))")
    proc = _run_hidden(code)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "musebridge train: needs torch" in lines[0] and "pip install -e '.[train]'" in lines[0]
    assert not (tmp_path / "run").exists()
