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
from typing import Any, Dict, Optional

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
    cwd: Optional[os.PathLike] = None,
    env: Optional[Dict[str, str]] = None,
) -> Dict[str, Any]:
    """Run ``migsnap prepare --json --database DATABASE`` and return its JSON
    result (``host``, ``port``, ``user``, ``password``, ``dbname``, ``source``…).

    migsnap's progress (stderr) is returned in the error when it fails and
    otherwise dropped: a warm prepare has nothing to say.
    """
    args = [find_binary(), "prepare", "--json", "--database", database]
    if rebuild:
        args.append("--rebuild")
    child_env = dict(os.environ if env is None else env)
    # The interpreter running the tests has the project's Django; prefer it
    # unless the user chose one for migsnap explicitly.
    child_env.setdefault("MIGSNAP_PYTHON", sys.executable)
    proc = subprocess.run(
        args,
        cwd=cwd,
        env=child_env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise MigsnapError(
            "`migsnap prepare --database %s` failed (exit code %d):\n%s"
            % (database, proc.returncode, proc.stderr.rstrip())
        )
    try:
        return json.loads(proc.stdout)
    except ValueError as e:
        raise MigsnapError("migsnap printed no JSON result: %s\n%s" % (e, proc.stdout)) from e
