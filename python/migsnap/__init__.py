"""migsnap's Python side: find the ``migsnap`` binary and prepare databases.

The pytest plugin (``migsnap.pytest_plugin``) is the main user; ``prepare``
is usable on its own from any Python test harness.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

__all__ = ["MigsnapError", "find_binary", "prepare"]

#: Path of the migsnap binary to use instead of searching for it.
BIN_ENV = "MIGSNAP_BIN"


class MigsnapError(RuntimeError):
    """migsnap is missing or failed; the message says which and why."""


def find_binary() -> str:
    """``$MIGSNAP_BIN`` if set (an explicit choice wins), else the binary
    installed with this package (``pip install migsnap`` puts it in the
    interpreter's scripts directory), else ``migsnap`` on PATH."""
    explicit = os.environ.get(BIN_ENV)
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise MigsnapError(
                "%s=%s is not an executable file" % (BIN_ENV, explicit)
            )
        return explicit
    for directory in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(directory) / "migsnap"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("migsnap")
    if found:
        return found
    raise MigsnapError(
        "cannot find the migsnap binary (not installed next to this package, "
        "not on PATH, and %s is not set); install it with `pip install migsnap` "
        "or `cargo install --path .`, or set %s to its path" % (BIN_ENV, BIN_ENV)
    )


def prepare(
    database: str,
    *,
    rebuild: bool = False,
    force: bool = False,
    cwd: Optional[os.PathLike] = None,
    env: Optional[Dict[str, str]] = None,
    echo: Optional[Callable[[str], None]] = None,
) -> Dict[str, Any]:
    """Run ``migsnap prepare --json --database DATABASE`` and return its JSON
    result (``host``, ``port``, ``user``, ``password``, ``dbname``, ``source``,
    ``elapsed_ms``…).

    ``force`` passes ``--force``: replace the database even if its name does
    not start with ``test_``. migsnap's progress and warnings (its stderr) go,
    line by line as they come, to ``echo`` (default: this process's stderr),
    so a build that takes minutes is never silent. The error report that
    migsnap prints when it fails (from its ``error:`` line on) is not echoed:
    it is the message of the ``MigsnapError`` raised instead.
    """
    args = [find_binary(), "prepare", "--json", "--database", database]
    if rebuild:
        args.append("--rebuild")
    if force:
        args.append("--force")
    if echo is None:
        echo = _echo_to_stderr
    child_env = dict(os.environ if env is None else env)
    # The interpreter running the tests has the project's Django; prefer it
    # unless the user chose one for migsnap explicitly.
    child_env.setdefault("MIGSNAP_PYTHON", sys.executable)
    proc = subprocess.Popen(
        args,
        cwd=cwd,
        env=child_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    )
    # stdout carries only the JSON result, printed at the end and far
    # smaller than a pipe's buffer: reading stderr to its end first cannot
    # block migsnap.
    assert proc.stdout is not None and proc.stderr is not None
    said: List[str] = []
    report: List[str] = []
    for raw in proc.stderr:
        line = raw.rstrip("\n")
        said.append(line)
        if report or line.startswith("error:"):
            report.append(line)
        else:
            echo(line)
    out = proc.stdout.read()
    code = proc.wait()
    if code != 0:
        # No `error:` line (killed by a signal, say): what it said last.
        shown = report or said[-20:]
        raise MigsnapError(
            "`migsnap prepare --database %s` failed (exit code %d):\n%s"
            % (database, code, "\n".join(shown).rstrip())
        )
    try:
        return json.loads(out)
    except ValueError as e:
        raise MigsnapError("migsnap printed no JSON result: %s\n%s" % (e, out)) from e


def _echo_to_stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
