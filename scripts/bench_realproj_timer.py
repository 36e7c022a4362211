"""pytest plugin for scripts/bench_realproj.sh: how long the test databases took.

pytest has no equivalent of `manage.py test --timing`'s "Total database
setup": the session fixture's time is folded into the first database test's
setup. This times `django_db_setup` (pytest-django's, or migsnap's override
of it) and prints one line the script parses, so both runners report the
same span: from asking for the databases to having them. Under xdist each
worker times its own and hands it to the controller (xdist's
`workeroutput`), which prints the longest: the workers set up at once.
"""

import time

import pytest

_took = []


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    if fixturedef.argname != "django_db_setup":
        yield
        return
    start = time.monotonic()
    yield
    _took.append(time.monotonic() - start)


def pytest_sessionfinish(session):
    out = getattr(session.config, "workeroutput", None)
    if out is not None:
        out["bench_django_db_setup"] = list(_took)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    _took.extend(getattr(node, "workeroutput", {}).get("bench_django_db_setup", []))


def pytest_terminal_summary(terminalreporter):
    if _took:
        terminalreporter.write_line("bench: django_db_setup took %.2f s" % max(_took))
