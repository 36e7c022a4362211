"""What the user hears from migsnap during a pytest run: its progress and
warnings, live, and one summary line per run.

migsnap writes progress and warnings to stderr; the plugin reads them line
by line as they come. In the pytest process they go through pytest's
terminal reporter, past its output capture (so with or without ``-s``);
on a terminal, the per-migration progress line is redrawn in place.
``-q`` silences progress, never warnings.

Under pytest-xdist a worker's terminal reporter writes where nobody sees it,
so workers write to their stderr, which is the controller's terminal, each
line tagged with the worker's id. Only one worker draws progress: the first
with something to say other than "waiting for another migsnap", which is
the one doing the work; a file lock that the controller hands out elects it.
The others stay quiet, but for warnings.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
import tempfile
from typing import Any, Dict, IO, Iterator, List, Optional

import pytest

from migsnap import Said, _databases


#: workerinput key: the file whose lock elects the worker that draws progress.
DRAWER_LOCK = "migsnap_drawer_lock"
#: workeroutput key: the worker's prepare results, for the controller's summary.
RESULTS = "migsnap_results"

_voice_key = pytest.StashKey["Voice"]()
_results_key = pytest.StashKey[List[Dict[str, Any]]]()
_lock_dir_key = pytest.StashKey[str]()


class Voice:
    """Writes migsnap's lines and the plugin's own to the user's terminal."""

    def __init__(self, config: pytest.Config) -> None:
        self._config = config
        self._verbosity = config.getoption("verbose", 0)
        workerinput = getattr(config, "workerinput", None)
        self._worker: Optional[str] = workerinput["workerid"] if workerinput else None
        self._lock_path: Optional[str] = workerinput.get(DRAWER_LOCK) if workerinput else None
        self._lock: Optional[IO[str]] = None  # held while this worker draws
        self._redrawing = False  # an unfinished progress line is on the terminal

    def migsnap_said(self, line: Said) -> None:
        """One thing migsnap said (its JSON events, as lines), as it comes."""
        if line.event in ("warning", "hint"):
            self.warn(line)
            return
        if line.event == "waiting":
            # Another migsnap does the work: let the worker doing it draw.
            self._release()
            if self._worker is not None:
                return
        if self._verbosity >= 0 and self._draws():
            self._write(line, transient=line.progress, live_only=line.live_only)

    def warn(self, text: str) -> None:
        """Always shown, by every process."""
        self._write(text, yellow=True)

    def finished(self) -> None:
        """One `prepare` is over: end a redrawn line, let another worker draw."""
        with self._uncaptured():
            self._end_redraw()
        self._release()

    def _draws(self) -> bool:
        if self._worker is None or self._lock is not None:
            return True
        if self._lock_path is None:  # a controller that did not hand out the lock
            return self._worker == "gw0"
        f = open(self._lock_path, "a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            return False
        self._lock = f
        return True

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases its lock
            self._lock = None

    @contextlib.contextmanager
    def _uncaptured(self) -> Iterator[None]:
        capman = self._config.pluginmanager.get_plugin("capturemanager")
        if capman is None:
            yield
            return
        with capman.global_and_fixture_disabled():
            yield

    def _reporter(self) -> Any:
        if self._worker is not None:
            return None
        return self._config.pluginmanager.get_plugin("terminalreporter")

    def _write(self, text: str, *, transient: bool = False, live_only: bool = False, **markup: bool) -> None:
        with self._uncaptured():
            reporter = self._reporter()
            if live_only and not (transient and reporter is not None and bool(reporter.isatty)):
                return  # a heartbeat for a live line; none is drawn here
            if reporter is None:
                tag = "[%s] " % self._worker if self._worker else ""
                err = sys.__stderr__ or sys.stderr
                err.write(tag + text + "\n")
                err.flush()
                return
            if transient and bool(reporter.isatty):
                if not self._redrawing:
                    reporter.ensure_newline()
                width = shutil.get_terminal_size().columns - 1
                reporter.rewrite(text[:width], erase=True)
                reporter.write("", flush=True)
                self._redrawing = True
                return
            self._end_redraw()
            reporter.write_line(text, **markup)

    def _end_redraw(self) -> None:
        if self._redrawing:
            reporter = self._reporter()
            reporter.rewrite("", erase=True)
            reporter.write("\r", flush=True)
            self._redrawing = False


def voice(config: pytest.Config) -> Voice:
    """The session's one Voice (it remembers a half-drawn line)."""
    if _voice_key not in config.stash:
        config.stash[_voice_key] = Voice(config)
    return config.stash[_voice_key]


def record(config: pytest.Config, result: Dict[str, Any]) -> None:
    """Keep a prepare result for the summary line (a worker also sends it
    to the controller)."""
    entry = _databases.entry(result)
    config.stash.setdefault(_results_key, []).append(entry)
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput.setdefault(RESULTS, []).append(entry)


def count_fresh(config: pytest.Config, result: Dict[str, Any]) -> None:
    """One more fresh database swapped in after a test (`migsnap_fresh_db`):
    counted on the session database's entry (the same dict a worker sends
    its controller at its end), for the summary line."""
    for entry in reversed(config.stash.get(_results_key, [])):
        if entry["dbname"] == result.get("dbname"):
            entry["fresh"] = entry.get("fresh", 0) + 1
            entry["fresh_ms"] = entry.get("fresh_ms", 0) + int(result.get("elapsed_ms") or 0)
            entry["fresh_pool"] = entry.get("fresh_pool", 0) + (result.get("source") == "pool")
            return


def record_worker(config: pytest.Config, node: Any) -> None:
    """In the controller: take a finished worker's results."""
    for entry in getattr(node, "workeroutput", {}).get(RESULTS, []):
        config.stash.setdefault(_results_key, []).append(entry)


def summary(config: pytest.Config) -> Optional[str]:
    """`migsnap: test_app from template in 61 ms (tests waited 0 ms)` (one entry per database
    prepared, workers' included), or None if nothing was prepared."""
    return _databases.summary(config.stash.get(_results_key, []))


def drawer_lock(config: pytest.Config) -> str:
    """In the xdist controller: the lock file its workers compete for."""
    if _lock_dir_key not in config.stash:
        config.stash[_lock_dir_key] = tempfile.mkdtemp(prefix="migsnap-pytest-")
    return os.path.join(config.stash[_lock_dir_key], "drawer.lock")


def cleanup(config: pytest.Config) -> None:
    directory = config.stash.get(_lock_dir_key, None)
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
