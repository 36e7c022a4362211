"""migsnap's Python side: find the ``migsnap`` binary and prepare databases.

The pytest plugin (``migsnap.pytest_plugin``) is the main user; ``prepare``
is usable on its own from any Python test harness.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

__all__ = ["MigsnapError", "Preparing", "Said", "drop", "find_binary", "prepare"]

#: Path of the migsnap binary to use instead of searching for it.
BIN_ENV = "MIGSNAP_BIN"


class MigsnapError(RuntimeError):
    """migsnap is missing or failed; the message says which and why."""


#: Away from a terminal, a migration still running is shown this often (in
#: seconds), as migsnap's own text output does.
HEARTBEAT = 10.0


class Said(str):
    """One thing migsnap said while it worked: the line a person reads
    (``migsnap: [3/10] applying app.0003_x``), with what it is as data.
    migsnap runs with ``--progress json`` and this is made from its JSON
    line, so what the plugin does never depends on the wording.

    ``event`` is the event's kind (``status``, ``waiting``, ``applying``,
    ``still_applying``, ``warning``, ``hint``, ``output``; docs/usage.md), or
    None for a line that is no event (a report printed as text); ``data``
    its fields. ``live_only`` marks a ``still_applying`` that only a line
    redrawn in place should show: elsewhere one every ``HEARTBEAT`` seconds
    is enough."""

    event: Optional[str]
    data: Dict[str, Any]
    live_only: bool

    def __new__(cls, text: str, event: Optional[str] = None, data: Optional[Dict[str, Any]] = None) -> "Said":
        said = super().__new__(cls, text)
        said.event = event
        said.data = data or {}
        said.live_only = False
        return said

    @property
    def progress(self) -> bool:
        """A progress line: redrawn in place where that can be done."""
        return self.event in ("applying", "still_applying")


def _said(line: str) -> List[Said]:
    """What one line of ``--progress json`` stderr says, as lines a person
    reads (a warning with a hint is two); a line that is not an event is
    itself (an error report, or an older migsnap's text)."""
    data: Any = None
    if line.startswith("{"):
        try:
            data = json.loads(line)
        except ValueError:
            data = None
    if not isinstance(data, dict) or not isinstance(data.get("event"), str):
        return [Said(line)]
    event = data["event"]
    text = str(data.get("text", ""))
    if event == "progress_end":
        return []
    if event == "output":
        return [Said(text, event, data)]
    if event == "warning":
        said = [Said("migsnap: warning: " + text, event, data)]
        if data.get("hint"):
            said.append(Said("migsnap: hint: %s" % data["hint"], "hint", data))
        return said
    if event == "hint":
        return [Said("migsnap: hint: " + text, event, data)]
    return [Said("migsnap: " + text, event, data)]


def find_binary() -> str:
    """``$MIGSNAP_BIN`` if set (an explicit choice wins), else the binary
    installed with this package (installing the migsnap wheel puts it in the
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
    # Not `pip install migsnap`: that asks PyPI, where a package of that
    # name, if any, is not this migsnap (README, Install); the wheel comes
    # from the team's own index.
    raise MigsnapError(
        "cannot find the migsnap binary (not installed next to this package, "
        "not on PATH, and %s is not set); install the migsnap wheel your team "
        "publishes (`pip install --no-deps --index-url YOUR_INDEX migsnap==VERSION`, "
        "or the .whl file), or `pip install .` from a clone of migsnap, "
        "or set %s to its path" % (BIN_ENV, BIN_ENV)
    )


def prepare(
    database: str,
    *,
    alias: str = "default",
    rebuild: bool = False,
    force: bool = False,
    pool_default: Optional[int] = None,
    cwd: Optional[os.PathLike] = None,
    env: Optional[Dict[str, str]] = None,
    echo: Optional[Callable[[str], None]] = None,
    at: Optional[List[str]] = None,
) -> Dict[str, Any]:
    """Run ``migsnap prepare --json --database DATABASE --alias ALIAS`` and
    return its JSON result (``host``, ``port``, ``user``, ``password``,
    ``dbname``, ``source``, ``elapsed_ms``…). ``alias`` is the settings'
    DATABASES alias the database is for: it is migrated as ``migrate
    --database ALIAS`` would, from a snapshot of its own.

    ``force`` passes ``--force``: replace the database even if its name does
    not start with ``test_``. ``pool_default`` passes ``--pool-default N``:
    the pool size to keep when the project configures none (the pytest
    plugin's worker count). migsnap's progress and warnings (its stderr) go,
    line by line as they come, to ``echo`` (default: this process's stderr),
    so a build that takes minutes is never silent. The error report that
    migsnap prints when it fails (from its ``error:`` line on) is not echoed:
    it is the message of the ``MigsnapError`` raised instead.

    ``at`` passes ``--at``: the database as ``manage.py migrate APP NAME``
    to each of these migrations (``app.name``, ``app.zero`` or a file path),
    one after another, leaves it on an empty database; a snapshot of its
    own. It excludes ``pool_default``.
    """
    return Preparing(
        database,
        alias=alias,
        rebuild=rebuild,
        force=force,
        pool_default=pool_default,
        cwd=cwd,
        env=env,
        at=at,
    ).result(echo)


class Preparing:
    """A ``migsnap prepare`` started and not yet waited for: ``prepare``
    split in two, so a caller can do other work while the database is made
    (the pytest plugin collects tests meanwhile)."""

    def __init__(
        self,
        database: str,
        *,
        alias: str = "default",
        rebuild: bool = False,
        force: bool = False,
        pool_default: Optional[int] = None,
        cwd: Optional[os.PathLike] = None,
        env: Optional[Dict[str, str]] = None,
        at: Optional[List[str]] = None,
        unless_ready: bool = False,
    ) -> None:
        self.database = database
        args = [find_binary(), "prepare", "--json", "--progress", "json", "--database", database, "--alias", alias]
        if rebuild:
            args.append("--rebuild")
        if unless_ready:
            # Nothing is done when a ready pool member waits: the result is
            # then `{"prepared": false, ...}`.
            args.append("--unless-ready")
        if force:
            args.append("--force")
        if pool_default is not None:
            args += ["--pool-default", str(pool_default)]
        # `--at`: migrated only to these migrations, one after another.
        if at:
            args += ["--at", *at]
        self._proc = subprocess.Popen(
            args,
            cwd=cwd,
            env=_child_env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
        # stdout is read by a thread of its own from the start: the JSON
        # result of a cold build lists every migration's cost (158 KB on a
        # 1,000-migration project), more than a pipe holds, and migsnap
        # blocked on writing it while we waited for stderr to end.
        self._out: List[str] = []
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()

    def _read_stdout(self) -> None:
        assert self._proc.stdout is not None
        self._out.append(self._proc.stdout.read())

    def result(self, echo: Optional[Callable[[Said], None]] = None) -> Dict[str, Any]:
        """Wait for migsnap, passing what it says (``Said`` lines) to
        ``echo`` as it comes; its JSON result, or MigsnapError with its
        error report."""
        if echo is None:
            echo = _echo_to_stderr
        proc = self._proc
        assert proc.stdout is not None and proc.stderr is not None
        said: List[str] = []
        report: List[str] = []
        last_progress = 0.0
        for raw in proc.stderr:
            line = raw.rstrip("\n")
            if report or line.startswith("error:"):
                report.append(line)
                said.append(line)
                continue
            for one in _said(line):
                said.append(one)
                if one.progress:
                    now = time.monotonic()
                    if one.event == "still_applying" and now - last_progress < HEARTBEAT:
                        one.live_only = True
                    else:
                        last_progress = now
                echo(one)
        self._reader.join()
        out = "".join(self._out)
        code = proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        if code != 0:
            # No `error:` line (killed by a signal, say): what it said last.
            shown = report or said[-20:]
            raise MigsnapError(
                "`migsnap prepare --database %s` failed (exit code %d):\n%s"
                % (self.database, code, "\n".join(shown).rstrip())
            )
        try:
            return json.loads(out)
        except ValueError as e:
            raise MigsnapError("migsnap printed no JSON result: %s\n%s" % (e, out)) from e

    def cancel(self) -> None:
        """Stop it as Ctrl-C would: migsnap cleans up what it started (a
        half-made database, its Django child) and leaves the old state."""
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)


def drop(
    database: str,
    *,
    cwd: Optional[os.PathLike] = None,
    env: Optional[Dict[str, str]] = None,
) -> Dict[str, Any]:
    """Run ``migsnap drop --json --database DATABASE``: drop it if migsnap
    made it (a clone ``prepare`` handed out, a pool member, a template), and
    return the JSON result (``database``, ``dropped``: false when there was
    no such database). migsnap alone decides from its mark what is its to
    drop; for any other database it refuses, and this raises MigsnapError
    with its report (``error:`` and ``hint:`` lines). ``cwd`` and ``env``
    as for ``prepare``, so that it finds the same server."""
    proc = subprocess.run(
        [find_binary(), "--quiet", "drop", "--json", "--database", database],
        cwd=cwd,
        env=_child_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
    )
    if proc.returncode != 0:
        said = proc.stderr.splitlines()
        # From the `error:` line on; without one (killed by a signal, say),
        # what it said last.
        starts = [i for i, line in enumerate(said) if line.startswith("error:")]
        report = said[starts[0] :] if starts else said[-20:]
        raise MigsnapError(
            "`migsnap drop --database %s` failed (exit code %d):\n%s"
            % (database, proc.returncode, "\n".join(report).rstrip())
        )
    try:
        return json.loads(proc.stdout)
    except ValueError as e:
        raise MigsnapError("migsnap printed no JSON result: %s\n%s" % (e, proc.stdout)) from e


def _child_env(env: Optional[Dict[str, str]]) -> Dict[str, str]:
    """The environment migsnap runs in: ``env`` (default: this process's)."""
    child_env = dict(os.environ if env is None else env)
    # The interpreter running the tests has the project's Django; prefer it
    # unless the user chose one for migsnap explicitly.
    child_env.setdefault("MIGSNAP_PYTHON", sys.executable)
    # Its stderr is read here line by line (JSON events, and the error
    # report) and shown by pytest: plain text, whatever CLICOLOR_FORCE says.
    child_env["NO_COLOR"] = "1"
    return child_env


def _echo_to_stderr(line: Said) -> None:
    if line.live_only:
        return
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
