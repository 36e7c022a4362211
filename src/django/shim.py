"""migsnap's Django shim: run migrate against the database migsnap chose.

Run as `python -c <this> /path/to/manage.py`. It runs the project's own
manage.py (so whatever it does first -- setting DJANGO_SETTINGS_MODULE,
loading .env, tweaking sys.path -- still happens), but replaces
execute_from_command_line so that, once the settings are importable, the
database alias MIGSNAP_ALIAS (`default` unless told) is pointed at
MIGSNAP_DB_* before Django opens any connection, and migrate runs for that
alias (`migrate --database ALIAS`, as Django's test setup runs it) with a
progress callback.

Protocol: one JSON object per line on the *original* stdout; everything
Django or a migration prints goes to stderr instead.
"""
import hashlib
import json
import os
import runpy
import sys
import time
import traceback

MANAGE_PY = sys.argv[1]
PROJECT_DIR = os.path.dirname(os.path.abspath(MANAGE_PY))
#: The DATABASES alias migsnap builds (its routers decide what lands there).
ALIAS = os.environ.get("MIGSNAP_ALIAS") or "default"
#: Modules loaded before manage.py ran (the interpreter's own).
_modules_at_start = set(sys.modules)
#: Modules manage.py and the settings imported, up to the moment the settings
#: were loaded (see `settings_files`): whatever decides INSTALLED_APPS.
_settings_modules = set()
_events = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)  # from here on, fd 1 (print, Django's stdout) is stderr


def emit(event, **fields):
    fields["event"] = event
    _events.write(json.dumps(fields) + "\n")
    _events.flush()


def label(migration):
    return "%s.%s" % (migration.app_label, migration.name)


class MigsnapError(Exception):
    """A problem migsnap explains itself (reported without a traceback);
    `category` says which kind (see `category_of`)."""

    def __init__(self, message, category="configuration"):
        super().__init__(message)
        self.category = category


#: Set once the settings are loaded and Django is set up: an exception
#: before that is the project's configuration, after it the migration's.
_ready = False


def lost_connection(e):
    """Whether `e` is the connection to PostgreSQL failing rather than a
    statement failing: an OperationalError or InterfaceError (Django's
    wrapper or the driver's own) that carries no SQLSTATE (libpq's own
    "server closed the connection", "connection refused"…), or one of class
    08 (connection exception) or 57P (the server shutting down or killing
    the session). Asking the connection afterwards cannot tell: Django may
    already have reconnected while rolling back."""
    from django.db import connections
    from django.db.utils import InterfaceError, OperationalError

    kinds = (OperationalError, InterfaceError)
    try:
        driver = connections[ALIAS].Database
        kinds += (driver.OperationalError, driver.InterfaceError)
    except Exception:
        pass
    if not isinstance(e, kinds):
        return False
    code = None
    for x in (e, e.__cause__):
        code = code or getattr(x, "sqlstate", None) or getattr(x, "pgcode", None)
    return code is None or code.startswith("08") or code.startswith("57P")


def category_of(e):
    """What kind of failure `e` is, decided here with isinstance and the
    error's SQLSTATE rather than by the Rust side matching message text:
    history (the starting database does not fit these migrations), server
    (the connection is gone), settings (raised before Django was set up),
    migration (anything a migration raised), exit (manage.py exited)."""
    if isinstance(e, MigsnapError):
        return e.category
    if isinstance(e, SystemExit):
        return "exit"
    try:
        from django.db.migrations.exceptions import (
            InconsistentMigrationHistory,
            NodeNotFoundError,
        )
        from django.db.utils import NotSupportedError

        if isinstance(e, (InconsistentMigrationHistory, NodeNotFoundError)):
            return "history"
        # Raised by the backend's version check as Django connects
        # ("PostgreSQL 14 or later is required"), before anything migrates.
        if isinstance(e, NotSupportedError) and not _ready:
            return "unsupported"
        if lost_connection(e):
            return "server"
    except ImportError:
        pass
    return "migration" if _ready else "settings"


#: libpq connection parameters that choose the server, database or role.
LIBPQ_TARGET_KEYS = (
    "service",
    "passfile",
    "dbname",
    "host",
    "hostaddr",
    "port",
    "user",
    "password",
    "target_session_attrs",
    "load_balance_hosts",
)


def require_target_database():
    """The connection Django opened is the database migsnap chose, on its
    server: whatever the settings did, migrate must not run elsewhere."""
    from django.db import connections

    with connections[ALIAS].cursor() as cursor:
        cursor.execute("SELECT current_database(), current_setting('port')")
        name, port = cursor.fetchone()
    want = (os.environ["MIGSNAP_DB_NAME"], os.environ["MIGSNAP_DB_PORT"])
    if (name, str(port)) != want:
        raise MigsnapError(
            "the settings connect Django to database %r (port %s), not to migsnap's %r "
            "(port %s); remove what overrides DATABASES[%r] (OPTIONS, a router) "
            "for migsnap's runs" % (name, port, want[0], want[1], ALIAS),
            category="elsewhere",
        )


def point_default_database_at_target():
    from django.conf import settings

    databases = settings.DATABASES  # imports the settings module
    # From the shim's start, not from here: manage.py may have loaded the
    # settings (and what they import) already.
    _settings_modules.update(set(sys.modules) - _modules_at_start)
    if ALIAS not in databases:
        raise MigsnapError(
            "settings.DATABASES has no %r alias (it has %s)"
            % (ALIAS, ", ".join(repr(a) for a in databases) or "none"),
            category="alias",
        )
    original = dict(databases[ALIAS])
    target = {
        "NAME": os.environ["MIGSNAP_DB_NAME"],
        "HOST": os.environ["MIGSNAP_DB_HOST"],
        "PORT": os.environ["MIGSNAP_DB_PORT"],
        "USER": os.environ["MIGSNAP_DB_USER"],
        "PASSWORD": os.environ.get("MIGSNAP_DB_PASSWORD", ""),
    }
    same = lambda db: all(db.get(k) == original.get(k) for k in ("NAME", "HOST", "PORT"))
    # Aliases that are this database under another name (a replica entry, a
    # router's read alias, a TEST["MIRROR"] of it, as Django's test setup
    # makes them) follow it; any other alias is a different database and is
    # left as the settings say, as a plain migrate would.
    for alias, db in databases.items():
        mirror = (db.get("TEST") or {}).get("MIRROR")
        if alias != ALIAS and mirror != ALIAS and not same(db):
            _other_aliases[alias] = db.get("NAME")
            continue
        db.update(target)
        options = db.setdefault("OPTIONS", {})
        # Django passes OPTIONS to libpq after NAME/HOST/…, so any of these
        # would send migrate somewhere else than the database migsnap chose
        # (a service, a passfile, an explicit dbname or host); and sslmode
        # cannot work over a Unix socket.
        for key in LIBPQ_TARGET_KEYS:
            options.pop(key, None)
        if target["HOST"].startswith("/"):
            options.pop("sslmode", None)
    # A connection that manage.py opened early would still point elsewhere.
    from django.db import connections

    connections.close_all()
    return settings


#: The aliases left as the settings say (alias -> their NAME): real
#: databases, not this build's. See `refuse_other_aliases`.
_other_aliases = {}


def refuse_other_aliases():
    """Make any use of another alias fail. Those still name the settings'
    own databases (a developer's, a shared server's): Django's test setup
    has pointed `default` at its test database by the time it migrates
    another alias, but migsnap builds each alias's snapshot on its own, so
    a migration reaching `default` from `warehouse`'s build (a router
    sending a model there, `using("default")`) would read real rows into
    the snapshot, or write into the real database. Never connecting is the
    only safe answer: the build stops and says which alias it reached."""
    from django.db import connections

    for alias, name in _other_aliases.items():
        def refuse(*_args, _alias=alias, _name=name, **_kwargs):
            raise MigsnapError(
                "the build of alias %r used alias %r, which still names the settings' own "
                "database %r: migsnap builds each alias's database on its own and never "
                "connects to a real one" % (ALIAS, _alias, _name),
                category="other_alias",
            )

        connections[alias].connect = refuse


def require_postgresql():
    from django.db import connections

    vendor = connections[ALIAS].vendor
    if vendor != "postgresql":
        raise MigsnapError(
            "DATABASES[%r] uses the %s backend (%s); migsnap needs PostgreSQL"
            % (ALIAS, vendor, connections[ALIAS].settings_dict.get("ENGINE"))
        )


def sha256_of(path):
    """sha256 of the file with CRLF read as LF: the same normalisation as
    migsnap's key (fingerprint.rs), so both sides compare."""
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read().replace(b"\r\n", b"\n")).hexdigest()
    except OSError:
        return None


def _installed_code_dirs():
    """Where the interpreter's own library and installed packages live:
    those change only with the interpreter or a dependency (key inputs)."""
    import sysconfig

    dirs = set()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            dirs.add(os.path.abspath(path) + os.sep)
    return tuple(dirs)


def settings_files():
    """manage.py, and every module manage.py and the settings imported
    until the settings were loaded (the settings module, a settings
    package's parts, local config modules, a shared settings module on
    sys.path outside the project): what decides INSTALLED_APPS. The
    interpreter's library and installed packages are left out."""
    from django.conf import settings

    paths = {os.path.abspath(MANAGE_PY)}
    # Also the settings module and its siblings by name, in case they were
    # imported before the shim started watching.
    module = settings.SETTINGS_MODULE or ""
    package = module.rpartition(".")[0]
    # A settings package (`mysite.settings.test` beside `.base`) counts whole.
    siblings = package + "." if package.rpartition(".")[2] == "settings" else None
    related = {
        n
        for n in sys.modules
        if n == module or n.startswith(module + ".") or (siblings and n.startswith(siblings))
    }
    installed = _installed_code_dirs()
    for name in _settings_modules | related:
        path = getattr(sys.modules.get(name), "__file__", None)
        if not path or not os.path.isfile(path):
            continue
        path = os.path.abspath(path)
        if path.startswith(installed) or "site-packages" in path or "dist-packages" in path:
            continue
        paths.add(path)
    return sorted(paths)


def migration_imports(migration_paths):
    """The project's own modules that migrations import (a custom field
    class, a RunPython helper, constants), and what those import in turn:
    `migrate` runs their code, so their content is part of what it builds.
    Read from the import statements of each file (the modules themselves are
    already loaded); installed packages and the migrations themselves are
    left out."""
    import ast

    installed = _installed_code_dirs()
    migration_paths = [os.path.abspath(p) for p in migration_paths]
    skip = set(migration_paths)
    found, todo, seen = set(), list(migration_paths), set()
    # Which package each loaded file belongs to, for its relative imports.
    packages = {}
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file:
            packages[os.path.abspath(file)] = getattr(module, "__package__", None) or ""

    def local_file(name):
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if not path or not os.path.isfile(path):
            return None
        path = os.path.abspath(path)
        if path.startswith(installed) or "site-packages" in path or "dist-packages" in path:
            return None
        return path

    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        try:
            with open(path, "rb") as f:
                tree = ast.parse(f.read(), path)
        except (OSError, SyntaxError, ValueError):
            continue
        package = packages.get(path, "")
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".") if package else []
                    parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                    base = ".".join(p for p in parts + ([base] if base else []) if p)
                names = [base] + ["%s.%s" % (base, a.name) for a in node.names]
            for name in names:
                # `a.b.c` also runs `a` and `a.b`.
                pieces = name.split(".")
                for i in range(1, len(pieces) + 1):
                    file = local_file(".".join(pieces[:i]))
                    if file and file not in skip:
                        found.add(file)
                        todo.append(file)
    return sorted(found)


def report_inputs(loader):
    """Everything the build depends on, hashed as Django read it: every
    migration the loader found (third-party ones too), the directories they
    came from, the settings files and Django itself."""
    import django
    from django.apps import apps
    from django.conf import settings

    migrations = []
    for (app, name), migration in sorted(loader.disk_migrations.items()):
        path = getattr(sys.modules.get(type(migration).__module__), "__file__", None)
        migrations.append(
            {
                "app": app,
                "name": name,
                "path": path,
                "sha256": sha256_of(path) if path else None,
                # What a squash (or an app renamed with `replaces`) stands
                # for: rows of the replaced names still count as applied.
                "replaces": [list(r) for r in (migration.replaces or [])],
            }
        )
    dirs = set()
    for config in apps.get_app_configs():
        module_name, _explicit = loader.migrations_module(config.label)
        module = sys.modules.get(module_name) if module_name else None
        for path in getattr(module, "__path__", None) or []:
            dirs.add(os.path.abspath(path))
    loaded = [m["path"] for m in migrations if m["path"]]
    code = migration_imports(loaded)
    files = sorted(set(settings_files() + [os.path.abspath(django.__file__)]) - set(code))
    emit(
        "inputs",
        django=django.get_version(),
        settings_module=settings.SETTINGS_MODULE,
        installed_apps=[c.name for c in apps.get_app_configs()],
        migration_modules={k: v for k, v in getattr(settings, "MIGRATION_MODULES", {}).items()},
        migrations=migrations,
        migration_dirs=sorted(dirs),
        files=[{"path": p, "sha256": sha256_of(p)} for p in files],
        migration_code=[{"path": p, "sha256": sha256_of(p)} for p in code],
    )


def migrate():
    from django.core.management import call_command
    from django.core.management.commands import migrate as migrate_command
    from django.db import connections
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connections[ALIAS])
    report_inputs(executor.loader)
    # `prepare --at`: every target resolved before anything is migrated, so
    # that a wrong one costs no migration.
    names = json.loads(os.environ.get("MIGSNAP_MIGRATE_TARGETS") or "[]")
    targets = resolve_targets(executor.loader, names, zero=True) if names else None
    plan = plan_through(executor, targets)
    emit("plan", migrations=[label(m) for m in plan])

    original = migrate_command.Command.migration_progress_callback
    started = {}
    cost = QueryCount()

    def progress(self, action, migration=None, fake=False):
        if action == "unapply_success":
            emit("undone", migration=label(migration))
        if action == "apply_start":
            started[label(migration)] = time.perf_counter()
            cost.start(label(migration))
            emit("start", migration=label(migration))
        elif action == "apply_success":
            name = label(migration)
            statements, round_trips = cost.stop()
            emit(
                "done",
                migration=name,
                seconds=time.perf_counter() - started.pop(name, time.perf_counter()),
                statements=statements,
                round_trips=round_trips,
            )
        return original(self, action, migration, fake)

    migrate_command.Command.migration_progress_callback = progress
    with connections[ALIAS].execute_wrapper(cost):
        if targets is None:
            call_command("migrate", database=ALIAS, interactive=False, verbosity=1)
        # As `migrate APP NAME` run once per target, in order: each run
        # its own plan and its own post_migrate (content types,
        # permissions), as a plain migrate to each would have.
        for app, name in targets or []:
            call_command(
                "migrate", app, name or "zero", database=ALIAS, interactive=False, verbosity=1
            )


def choose_base():
    """`prepare --at`: which of the candidate snapshots (manifest files
    migsnap names, each read for its django_migrations rows) the targets
    can be reached from exactly as from an empty database: `migrate` to
    each target in turn, as Django plans it from that snapshot's rows,
    only ever applies migrations, and ends with the same rows as from
    empty, where it only applies too. The one with the most rows, else
    none. No connection: Django plans from the rows given, and a target it
    does not know is refused here, before any database is made."""
    import django

    django.setup()
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(None)
    names = json.loads(os.environ.get("MIGSNAP_MIGRATE_TARGETS") or "[]")
    targets = resolve_targets(executor.loader, names, zero=True)
    loader = executor.loader

    def reach(applied):
        """The rows after the targets from `applied`, or None if a step
        would unapply something."""
        applied = dict.fromkeys(applied, True)
        for target in targets:
            loader.applied_migrations = applied
            for migration, backwards in executor.migration_plan([target]):
                if backwards:
                    return None
                applied[(migration.app_label, migration.name)] = True
        return set(applied)

    goal = reach([])
    best = None
    if goal is not None:
        for i, path in enumerate(json.loads(os.environ.get("MIGSNAP_AT_CANDIDATES") or "[]")):
            with open(path, encoding="utf-8") as f:
                rows = [tuple(r.split(".", 1)) for r in json.load(f).get("applied", [])]
            if not rows or (best is not None and len(rows) <= best[1]):
                continue
            if reach(rows) == goal:
                best = (i, len(rows))
    emit("at_base", index=None if best is None else best[0])


def plan_through(executor, targets):
    """The migrations `migrate` will apply, in order (for the progress
    count): to the leaves, or to each target after the one before, as
    `migrate` plans it from what the previous one left applied."""
    if targets is None:
        return [m for m, _ in executor.migration_plan(executor.loader.graph.leaf_nodes())]
    loader = executor.loader
    saved = loader.applied_migrations
    applied = dict(saved)
    forwards = []
    try:
        for target in targets:
            loader.applied_migrations = applied
            for migration, backwards in executor.migration_plan([target]):
                key = (migration.app_label, migration.name)
                if backwards:
                    applied.pop(key, None)
                else:
                    applied[key] = migration
                    forwards.append(migration)
    finally:
        loader.applied_migrations = saved
    return forwards


class QueryCount:
    """Counts what the current migration sends to PostgreSQL, as Django's
    `execute_wrapper` sees it (a RunPython's ORM calls, the schema editor's
    DDL, deferred SQL, the migration's django_migrations row): a round trip
    per execute or executemany call, a statement per execute and per
    parameter set of an executemany. A data migration that works row by row
    shows as thousands of round trips; the same work with bulk_create as a
    few. While a migration runs, a `queries` event at most every
    QUERIES_EVERY seconds keeps the progress line's count moving."""

    QUERIES_EVERY = 0.5

    def __init__(self):
        self.migration = None
        self.statements = self.round_trips = 0
        self.last_emit = 0.0

    def start(self, migration):
        self.migration = migration
        self.statements = self.round_trips = 0
        self.last_emit = time.perf_counter()

    def stop(self):
        self.migration = None
        return self.statements, self.round_trips

    def __call__(self, execute, sql, params, many, context):
        if self.migration is not None:
            self.round_trips += 1
            if many:
                try:
                    self.statements += len(params)
                except TypeError:  # an iterator: counted as one
                    self.statements += 1
            else:
                self.statements += 1
            now = time.perf_counter()
            if now - self.last_emit >= self.QUERIES_EVERY:
                self.last_emit = now
                emit(
                    "queries",
                    migration=self.migration,
                    statements=self.statements,
                    round_trips=self.round_trips,
                )
        return execute(sql, params, many, context)


def build_model_state():
    """Create every table and index the migration state declares, the way
    --nomigrations would from models, but from the state the migration
    files build (what Django's autodetector compares against), so the result
    depends on the migration files only. Apps without migrations use their
    real models, as migrate's syncdb step does."""
    from django.apps import apps as global_apps
    from django.db import connections, router
    from django.db.migrations.loader import MigrationLoader

    loader = MigrationLoader(None, ignore_no_migrations=True)
    report_inputs(loader)
    models = list(loader.project_state().apps.get_models())
    for config in global_apps.get_app_configs():
        if config.label not in loader.migrated_apps:
            models.extend(config.get_models())
    created = 0
    conflicts = []
    connection = connections[ALIAS]
    with connection.schema_editor() as editor:
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_schema()")
            (schema,) = cursor.fetchone()
        for model in models:
            opts = model._meta
            if not opts.managed or opts.proxy or opts.swapped:
                continue
            # What migrate would create on this alias: the routers decide.
            if not router.allow_migrate_model(ALIAS, model):
                continue
            opts.indexes = one_index_per_name(model, editor, schema, conflicts)
            editor.create_model(model)
            created += 1
    emit("created", models=created, conflicts=conflicts)


def one_index_per_name(model, editor, schema, conflicts):
    """The model's indexes with one per name. The migration state may list
    an index twice: django-taggit adds one with AddIndex, then "renames" it
    into existence from `old_fields` (RenameIndex appends an Index to the
    state without looking), and `migrate` builds it once, the rename finding
    it already named. Identical declarations are one index; a name declared
    with different definitions cannot be built twice either, so the first
    is kept (as the state's `get_index_by_name` finds it) and the others are
    reported as conflicts, each with both definitions."""
    kept = {}
    unique = []
    for index in model._meta.indexes:
        first = kept.get(index.name)
        if first is None:
            kept[index.name] = index
            unique.append(index)
        elif first.deconstruct() != index.deconstruct():
            conflicts.append(
                {
                    "schema": schema,
                    "table": model._meta.db_table,
                    "index": index.name,
                    "kept": str(first.create_sql(model, editor)),
                    "other": str(index.create_sql(model, editor)),
                }
            )
    return unique


def read_only_connection():
    """plan and sql only read: every transaction of the connection is read
    only, so not even a bug (or a migration's import-time side effect) can
    write to the database they look at (a production replica, or a scratch
    clone of a snapshot)."""
    from django.conf import settings

    options = settings.DATABASES[ALIAS].setdefault("OPTIONS", {})
    flag = "-c default_transaction_read_only=on"
    options["options"] = (options.get("options", "") + " " + flag).strip()


def operation_lines(path):
    """Line of each element of `operations = [...]` in the file's Migration
    class, in order; an empty list when the list is built some other way."""
    import ast

    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read(), path)
    except (OSError, SyntaxError, ValueError, TypeError):
        return []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef) or node.name != "Migration":
            continue
        for stmt in node.body:
            targets = []
            if isinstance(stmt, ast.Assign):
                targets = stmt.targets
            elif isinstance(stmt, ast.AnnAssign):
                targets = [stmt.target]
            if any(isinstance(t, ast.Name) and t.id == "operations" for t in targets):
                if isinstance(stmt.value, (ast.List, ast.Tuple)):
                    return [e.lineno for e in stmt.value.elts]
    return []


def source_text(value):
    """An operation argument as the migration file would spell it (Django's
    own migration serializer); repr for what it cannot serialise (a lambda)."""
    from django.db.migrations.serializer import serializer_factory

    try:
        return serializer_factory(value).serialize()[0]
    except Exception:
        return repr(value)


def describe_operation(op):
    _name, args, kwargs = op.deconstruct()
    arguments = {"_%d" % i: source_text(a) for i, a in enumerate(args)}
    arguments.update({k: source_text(v) for k, v in kwargs.items()})
    return {
        "type": type(op).__name__,
        "description": op.describe(),
        "arguments": arguments,
        "reversible": bool(op.reversible),
        "reduces_to_sql": bool(op.reduces_to_sql),
    }


def collect_sql(migration, state, connection):
    """Apply `migration` to `state` with the schema editor in collect-SQL
    mode, as sqlmigrate does (Migration.apply, so the SQL is Django's own),
    and split what it collected per operation: each operation's
    state_forwards/database_forwards are wrapped to note where its
    statements start and end. Statements the editor defers to the end of
    the migration (foreign keys, some indexes) come back apart."""
    spans = [[None, None] for _ in migration.operations]
    #: id() of a deferred statement -> the operation that deferred it.
    owners = {}
    errors = {}
    for i, op in enumerate(migration.operations):

        def state_forwards(app_label, s, _op=op, _i=i, _orig=op.state_forwards):
            spans[_i][0] = len(editor.collected_sql)
            return _orig(app_label, s)

        def database_forwards(*a, _i=i, _orig=op.database_forwards, **kw):
            before = {id(s) for s in editor.deferred_sql}
            try:
                return _orig(*a, **kw)
            except Exception as e:
                # What migrate would fail with (AddIndexConcurrently in an
                # atomic migration): reported on the operation, and the
                # rest of the range still planned.
                errors[_i] = "%s: %s" % (type(e).__name__, str(e).strip().split("\n")[0])
            finally:
                spans[_i][1] = len(editor.collected_sql)
                for s in editor.deferred_sql:
                    if id(s) not in before:
                        owners.setdefault(id(s), _i)

        op.state_forwards = state_forwards
        op.database_forwards = database_forwards
    with connection.schema_editor(collect_sql=True, atomic=migration.atomic) as editor:
        state = migration.apply(state, editor, collect_sql=True)
        applied_until = len(editor.collected_sql)
        # __exit__ runs editor.deferred_sql in this order.
        deferred_owners = [owners.get(id(s)) for s in editor.deferred_sql]
    collected = editor.collected_sql
    per_op = [collected[a:b] if a is not None and b is not None else None for a, b in spans]
    deferred = collected[applied_until:]
    if len(deferred_owners) != len(deferred):
        deferred_owners = [None] * len(deferred)
    return state, per_op, (deferred, deferred_owners), collected, errors


def resolve_targets(loader, names, zero=False):
    """Migrations named as `app.name` (a unique prefix of the name is
    enough, as for sqlmigrate) or by file path (absolute, as migsnap passes
    them): their graph keys, in the order named. With `zero`, `app.zero`
    is `(app, None)`, as `migrate app zero` takes it."""
    from django.db.migrations.exceptions import AmbiguityError

    by_path = {}
    for key, migration in loader.disk_migrations.items():
        path = getattr(sys.modules.get(type(migration).__module__), "__file__", None)
        if path:
            by_path[os.path.realpath(path)] = key
    keys = []
    for name in names:
        if name.endswith(".py") or os.sep in name:
            key = by_path.get(os.path.realpath(name))
            if key is None:
                raise MigsnapError(
                    "`%s` is not a migration file Django loaded" % name, category="target"
                )
            keys.append(key)
            continue
        app, _, prefix = name.partition(".")
        if app not in loader.migrated_apps:
            raise MigsnapError(
                "no migration `%s`: no installed app `%s` has migrations" % (name, app),
                category="target",
            )
        if zero and prefix == "zero":
            keys.append((app, None))
            continue
        try:
            migration = loader.get_migration_by_prefix(app, prefix)
        except AmbiguityError:
            raise MigsnapError("`%s` matches more than one migration" % name, category="target")
        except KeyError:
            raise MigsnapError("no migration `%s`" % name, category="target")
        keys.append((migration.app_label, migration.name))
    return keys


def plan():
    """The migrations that would run against the connected database (a
    scratch clone of the nearest snapshot, or a live database read only),
    or the named ones, each with its operations and the SQL each produces
    against the project state right before it: the state migrate itself
    would hold there. One Python start for the whole range."""
    from django.db import connections
    from django.db.migrations.executor import MigrationExecutor
    from django.db.migrations.state import ProjectState

    connection = connections[ALIAS]
    executor = MigrationExecutor(connection)
    loader = executor.loader
    names = json.loads(os.environ.get("MIGSNAP_PLAN_TARGETS") or "[]")
    with_sql = os.environ.get("MIGSNAP_PLAN_SQL", "1") == "1"
    leaves = loader.graph.leaf_nodes()
    pending = [(m.app_label, m.name) for m, _ in executor.migration_plan(leaves)]
    wanted = set(resolve_targets(loader, names)) if names else set(pending)
    full = [m for m, _ in executor.migration_plan(leaves, clean_start=True)]
    last = max([i for i, m in enumerate(full) if (m.app_label, m.name) in wanted] or [-1])
    state = ProjectState(real_apps=loader.unmigrated_apps)
    applied = set(loader.applied_migrations)
    out = []
    for migration in full[: last + 1]:
        key = (migration.app_label, migration.name)
        if key not in wanted:
            state = migration.mutate_state(state, preserve=False)
            continue
        path = getattr(sys.modules.get(type(migration).__module__), "__file__", None)
        lines = operation_lines(path) if path else []
        operations = [describe_operation(op) for op in migration.operations]
        for i, op in enumerate(operations):
            op["index"] = i
            op["line"] = lines[i] if i < len(lines) else None
        entry = {
            "app": migration.app_label,
            "name": migration.name,
            "path": os.path.abspath(path) if path else None,
            "atomic": bool(migration.atomic),
            "initial": bool(getattr(migration, "initial", False)),
            "applied": key in applied,
            "dependencies": ["%s.%s" % d for d in migration.dependencies],
            "replaces": ["%s.%s" % r for r in (migration.replaces or [])],
            "operations": operations,
            "deferred_sql": None,
            "deferred_operations": None,
            "sql": None,
        }
        if with_sql:
            state, per_op, deferred, collected, errors = collect_sql(migration, state, connection)
            for i, (op, sql) in enumerate(zip(operations, per_op)):
                op["sql"] = sql
                op["error"] = errors.get(i)
            entry["deferred_sql"], entry["deferred_operations"] = deferred
            entry["sql"] = collected
            # sqlmigrate wraps an atomic migration's output, if any, in
            # BEGIN/COMMIT.
            entry["output_transaction"] = bool(
                collected and migration.atomic and connection.features.can_rollback_ddl
            )
        else:
            state = migration.mutate_state(state, preserve=False)
        out.append(entry)
    emit(
        "insight",
        database_applied=len(applied),
        pending=["%s.%s" % k for k in pending],
        migrations=out,
    )


#: pg_locks' names of the eight table lock modes, as PostgreSQL's documentation
#: and LOCK TABLE spell them. Other lock kinds (advisory, SIRead) are not
#: relation locks a migration takes.
LOCK_MODES = {
    "AccessShareLock": "ACCESS SHARE",
    "RowShareLock": "ROW SHARE",
    "RowExclusiveLock": "ROW EXCLUSIVE",
    "ShareUpdateExclusiveLock": "SHARE UPDATE EXCLUSIVE",
    "ShareLock": "SHARE",
    "ShareRowExclusiveLock": "SHARE ROW EXCLUSIVE",
    "ExclusiveLock": "EXCLUSIVE",
    "AccessExclusiveLock": "ACCESS EXCLUSIVE",
}

RELKINDS = {
    "r": "table",
    "p": "partitioned table",
    "m": "materialized view",
    "i": "index",
    "I": "partitioned index",
    "S": "sequence",
    "v": "view",
    "f": "foreign table",
    "c": "composite type",
}

#: Read after each statement of a traced migration, on the migration's own
#: connection (inside its transaction): the relation locks this backend
#: holds, and every user relation with its file (a table whose relfilenode
#: changed was rewritten). One round trip; system schemas left out (the
#: query's own catalog locks, TOAST, temporary tables).
TRACE_QUERY = """
SELECT
  (SELECT coalesce(json_agg(json_build_array(l.relation::text, l.mode)), '[]')
     FROM pg_locks l
    WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.granted
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))::text,
  (SELECT coalesce(json_object_agg(c.oid::text,
            json_build_array(c.oid::regclass::text, c.relkind::text, c.relfilenode::text)), '{}')
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname <> 'information_schema' AND n.nspname !~ '^pg_')::text
"""


class Tracer:
    """Django's `execute_wrapper` around every statement of the traced
    migrations (the schema editor's DDL and deferred SQL, RunSQL, a
    RunPython's ORM calls): after each, on the same connection and so in
    the migration's transaction, which locks it took, which tables got a
    new file, how long it ran and how many rows it changed. The time spent
    reading pg_locks is kept out of every figure."""

    def __init__(self, connection):
        self.connection = connection
        self.migration = None
        self.operation = None
        #: (deferred statement, index of the operation that deferred it)
        self.deferred = []
        self.busy = False
        self.bookkeeping = False
        #: oids of the tables there were when the range started.
        self.start_tables = None

    def relations(self):
        with self.connection.connection.cursor() as c:
            c.execute(TRACE_QUERY)
            locks, rels = c.fetchone()
        return json.loads(locks), json.loads(rels)

    def start(self, migration):
        _locks, rels = self.relations()
        if self.start_tables is None:
            self.start_tables = {o for o, (_n, k, _f) in rels.items() if k in "rpm"}
        self.migration = {
            "migration": label(migration),
            "atomic": bool(migration.atomic),
            "statements": [],
            "new_tables": [],
        }
        self.rels = rels
        self.held = set()
        self.overhead = 0.0
        self.started = time.perf_counter()
        self.operation = None
        self.deferred = []

    def stop(self):
        """The migration committed: its figures, with the end of its
        transaction on the same clock as its statements."""
        m, self.migration = self.migration, None
        m["duration_ms"] = (time.perf_counter() - self.started - self.overhead) * 1000
        return m

    def owner(self, sql):
        """The operation a statement belongs to: the running one, else (the
        schema editor's deferred SQL, run as it exits) the one that deferred
        it."""
        if self.operation is not None:
            return self.operation
        for statement, index in self.deferred:
            if str(statement) == sql:
                return index
        return None

    def __call__(self, execute, sql, params, many, context):
        m = self.migration
        if m is None or self.busy or self.bookkeeping:
            return execute(sql, params, many, context)
        begin = time.perf_counter()
        result = execute(sql, params, many, context)
        end = time.perf_counter()
        self.busy = True
        try:
            locks, rels = self.relations()
        finally:
            self.busy = False
        text = str(sql)
        entry = {
            "sql": text,
            "operation": self.owner(text),
            "at_ms": (begin - self.started - self.overhead) * 1000,
            "duration_ms": (end - begin) * 1000,
            "locks": None,
            "rewritten": [],
            "rows": None,
        }
        # Outside a transaction (a non-atomic migration) a statement's locks
        # end with it: there is nothing left to read.
        if self.connection.in_atomic_block:
            taken = []
            for oid, mode in locks:
                rel = rels.get(oid) or self.rels.get(oid)
                if rel is None or mode not in LOCK_MODES or (oid, mode) in self.held:
                    continue
                self.held.add((oid, mode))
                lock = {"relation": rel[0], "kind": RELKINDS.get(rel[1], rel[1]), "mode": LOCK_MODES[mode]}
                # An index rebuilt under its own name: two oids, one name.
                if lock not in taken:
                    taken.append(lock)
            entry["locks"] = taken
        for oid, (name, kind, node) in rels.items():
            if kind not in "rpm":
                continue
            old = self.rels.get(oid)
            if old is None:
                if oid not in self.start_tables and name not in m["new_tables"]:
                    m["new_tables"].append(name)
            elif old[2] != node and node != "0":
                entry["rewritten"].append(name)
        cursor = context.get("cursor")
        status = (getattr(cursor, "statusmessage", None) or "").split(" ")[0].upper()
        if status in ("INSERT", "UPDATE", "DELETE", "MERGE", "COPY"):
            rowcount = getattr(cursor, "rowcount", -1)
            entry["rows"] = rowcount if rowcount is not None and rowcount >= 0 else None
        self.rels = rels
        m["statements"].append(entry)
        self.overhead += time.perf_counter() - end
        return result

    def follow(self, migration):
        """Note which operation runs, and which deferred statements each
        leaves for the end of the migration."""
        for i, op in enumerate(migration.operations):

            def database_forwards(*a, _i=i, _orig=op.database_forwards, **kw):
                editor = a[1] if len(a) > 1 else kw.get("schema_editor")
                before = {id(s) for s in getattr(editor, "deferred_sql", [])}
                self.operation = _i
                try:
                    return _orig(*a, **kw)
                finally:
                    self.operation = None
                    for s in getattr(editor, "deferred_sql", []):
                        if id(s) not in before:
                            self.deferred.append((s, _i))

            op.database_forwards = database_forwards


def trace():
    """`migsnap trace`: apply the range `plan` reports (what migrate would
    run here, or the named migrations and what they need) to this scratch
    database with Django's own executor, statement by statement under a
    Tracer; with MIGSNAP_TRACE_ROWS, first fill the tables the range's
    operations name with that many synthetic rows each."""
    from django.db import connections
    from django.db.migrations.executor import MigrationExecutor

    connection = connections[ALIAS]
    tracer = Tracer(connection)
    out = []
    wanted = set()

    def progress(action, migration=None, fake=False):
        if action == "apply_start":
            emit("start", migration=label(migration))
            tracer.follow(migration)
            tracer.start(migration)
        elif action == "apply_success":
            m = tracer.stop()
            n = len(m["statements"])
            emit(
                "done",
                migration=m["migration"],
                seconds=m["duration_ms"] / 1000,
                statements=n,
                round_trips=n,
            )
            if (migration.app_label, migration.name) in wanted:
                path = getattr(sys.modules.get(type(migration).__module__), "__file__", None)
                lines = operation_lines(path) if path else []
                m["path"] = os.path.abspath(path) if path else None
                m["operations"] = [
                    {
                        "index": i,
                        "type": type(op).__name__,
                        "description": op.describe(),
                        "line": lines[i] if i < len(lines) else None,
                    }
                    for i, op in enumerate(migration.operations)
                ]
                out.append(m)

    executor = MigrationExecutor(connection, progress)
    loader = executor.loader
    names = json.loads(os.environ.get("MIGSNAP_PLAN_TARGETS") or "[]")
    rows = int(os.environ.get("MIGSNAP_TRACE_ROWS") or "0")
    applied = set(loader.applied_migrations)
    if names:
        targets = resolve_targets(loader, names)
        for key in targets:
            if key in applied:
                raise MigsnapError(
                    "`%s.%s` is already applied in the snapshot traced: trace applies only "
                    "migrations it lacks" % key,
                    category="applied",
                )
    else:
        targets = loader.graph.leaf_nodes()
    plan = executor.migration_plan(targets)
    wanted.update(targets if names else [(m.app_label, m.name) for m, _ in plan])
    emit("plan", migrations=[label(m) for m, _ in plan])
    seeded = seed(executor, [m for m, _ in plan], rows) if rows > 0 else []
    # The django_migrations row is migsnap's bookkeeping as much as Django's:
    # not a statement of the migration to report.
    record = executor.record_migration

    def record_migration(migration):
        tracer.bookkeeping = True
        try:
            return record(migration)
        finally:
            tracer.bookkeeping = False

    executor.record_migration = record_migration
    with connection.execute_wrapper(tracer):
        executor.migrate(targets, plan=plan)
    emit("trace", rows=rows or None, seeded=seeded, migrations=out)


def seed_tables(executor, migrations):
    """The tables, existing before the range, of the models its operations
    name (as Django's own `references_model` answers, so a foreign key's
    target counts too); RunSQL and RunPython name none that can be known."""
    from django.db.migrations.operations.base import Operation

    state = executor._create_project_state(with_applied_migrations=True)
    ops = [
        op
        for m in migrations
        for op in m.operations
        if type(op).references_model is not Operation.references_model
    ]
    tables = []
    for app_label, name in sorted(state.models):
        if not any(op.references_model(name, app_label) for op in ops):
            continue
        model = state.apps.get_model(app_label, name)
        if model._meta.proxy or not model._meta.managed:
            continue
        if model._meta.db_table not in tables:
            tables.append(model._meta.db_table)
    return tables


#: Each column of a table to fill: its name, type (as SQL), base type, type
#: category, typmod, NOT NULL, whether it fills itself (a sequence, an
#: identity, a generated column), and the column a foreign key on it points
#: at, if any.
COLUMNS_QUERY = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), t.typname, t.typcategory, a.atttypmod,
       a.attnotnull,
       a.attidentity <> '' OR a.attgenerated <> ''
         OR coalesce(left(pg_get_expr(d.adbin, d.adrelid), 8) = 'nextval(', false),
       (SELECT json_build_array(k.confrelid::regclass::text, fa.attname)::text
          FROM pg_constraint k
          JOIN pg_attribute fa ON fa.attrelid = k.confrelid AND fa.attnum = k.confkey[1]
         WHERE k.conrelid = a.attrelid AND k.contype = 'f' AND k.conkey = ARRAY[a.attnum]
         LIMIT 1)
  FROM pg_attribute a
  JOIN pg_type t ON t.oid = a.atttypid
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum
"""


def quote(name):
    return '"%s"' % name.replace('"', '""')


def synthetic(typname, category, typmod, sqltype):
    """A value of the type for row `g` of the series, distinct per row where
    the type allows; None when there is no obvious one."""
    if typname == "bool":
        return "(mod(g, 2) = 0)"
    if typname == "int2":
        return "mod(g, 32767)::int2"
    if typname in ("int4", "int8", "oid"):
        return "g"
    if typname == "numeric":
        if typmod > 4:
            precision, scale = ((typmod - 4) >> 16) & 0xFFFF, (typmod - 4) & 0xFFFF
            return "mod(g, %d)" % max(10 ** max(precision - scale, 0) - 1, 1)
        return "g"
    if typname in ("float4", "float8"):
        return "(g / 7.0)"
    if typname in ("varchar", "bpchar") and typmod > 4:
        return "right(g::text, %d)" % (typmod - 4)
    if category == "S":  # text, varchar, citext, name
        return "g::text"
    if typname == "uuid":
        return "md5(g::text)::uuid"
    if typname == "date":
        return "(date '2000-01-01' + mod(g, 2000000)::int4)"
    if typname in ("timestamp", "timestamptz"):
        return "(timestamp '2000-01-01' + g * interval '1 second')"
    if typname in ("time", "timetz"):
        return "(time '00:00' + mod(g, 86400) * interval '1 second')"
    if typname == "interval":
        return "(g * interval '1 second')"
    if typname in ("json", "jsonb"):
        return "json_build_object('n', g)"
    if typname == "bytea":
        return "int4send(g::int4)"
    if typname in ("inet", "cidr"):
        return "('10.0.0.0'::inet + g)"
    if category == "A":
        return "'{}'"
    if category == "E":
        return "(enum_range(NULL::%s))[1]" % sqltype
    return None


def seed(executor, migrations, rows):
    """Fill each table `seed_tables` names with `rows` synthetic rows, and
    any empty table a foreign key of theirs points at (else no row could
    reference one), those first: a foreign key's values are taken from the
    rows there. Then ANALYZE them: what a rewrite or an index build costs
    needs rows. A table that cannot be filled this way (a constraint the
    values break, a type with no obvious value) is left as it is and said
    so. Tables are named as `regclass` prints them, which is also valid SQL."""
    from django.db import DatabaseError

    connection = executor.connection
    plans = {}
    with connection.cursor() as cursor:
        todo = []
        for table in seed_tables(executor, migrations):
            cursor.execute("SELECT to_regclass(%s)::text", [quote(table)])
            (name,) = cursor.fetchone()
            if name and name not in todo:
                todo.append(name)
        while todo:
            table = todo.pop(0)
            cursor.execute(COLUMNS_QUERY, [table])
            plans[table] = cursor.fetchall()
            for *_c, fk in plans[table]:
                ref = json.loads(fk)[0] if fk else None
                if ref is None or ref in plans or ref in todo:
                    continue
                cursor.execute("SELECT NOT EXISTS (SELECT FROM %s)" % ref)
                if cursor.fetchone()[0]:
                    todo.append(ref)
    results = []
    pending = list(plans)
    while pending:
        # The tables whose foreign keys point at nothing still to fill.
        ready = [
            t
            for t in pending
            if not any(
                fk and json.loads(fk)[0] in pending and json.loads(fk)[0] != t
                for *_c, fk in plans[t]
            )
        ] or pending[:1]
        for table in ready:
            pending.remove(table)
            results.append(seed_table(connection, table, plans[table], rows, DatabaseError))
    with connection.cursor() as cursor:
        for r in results:
            if r["rows"]:
                cursor.execute("ANALYZE %s" % r["table"])
    return results


def seed_table(connection, table, columns, rows, DatabaseError):
    names, values, refs = [], [], []
    for name, sqltype, typname, category, typmod, notnull, fills_itself, fk in columns:
        if fills_itself:
            continue
        if fk:
            ref_table, ref_column = json.loads(fk)
            alias = "r%d" % len(refs)
            refs.append(
                "%s AS (SELECT array_agg(x) AS a FROM (SELECT %s AS x FROM %s LIMIT 1000) s)"
                % (alias, quote(ref_column), ref_table)
            )
            value = "%s.a[1 + mod(g, cardinality(%s.a))]" % (alias, alias)
        else:
            value = synthetic(typname, category, typmod, sqltype)
        if value is None:
            if notnull:
                return {"table": table, "rows": None, "skipped": "no synthetic value for column %s of type %s" % (name, sqltype)}
            continue
        names.append(quote(name))
        values.append("(%s)::%s" % (value, sqltype))
    sql = "%sINSERT INTO %s (%s) SELECT %s FROM generate_series(1, %d) g%s" % (
        "WITH %s " % ", ".join(refs) if refs else "",
        table,
        ", ".join(names),
        ", ".join(values),
        rows,
        "".join(", r%d" % i for i in range(len(refs))),
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
    except DatabaseError as e:
        return {"table": table, "rows": None, "skipped": first_line(e)}
    return {"table": table, "rows": rows, "skipped": None}


def list_aliases():
    """The settings' DATABASES as Django's test setup sees them (for
    `prepare --all-aliases`): each alias's backend, the test database it
    would create, its TEST["MIRROR"], and the signature that makes two
    aliases one database (`test_db_signature`). Read before anything is
    pointed elsewhere, and no connection is opened."""
    import django

    django.setup()
    from django.db import connections

    out = []
    for alias in connections:
        connection = connections[alias]
        postgres = connection.vendor == "postgresql"
        out.append(
            dict(
                alias=alias,
                vendor=connection.vendor,
                mirror=connection.settings_dict["TEST"].get("MIRROR") or None,
                test_name=connection.creation._get_test_db_name() if postgres else None,
                signature=[str(part) for part in connection.creation.test_db_signature()],
            )
        )
    emit("aliases", aliases=out)


def run(argv=None):
    global _called, _ready
    _called = True
    mode = os.environ.get("MIGSNAP_MODE", "migrate")
    if mode == "aliases":
        list_aliases()
        emit("finished")
        return
    if mode == "at":
        choose_base()
        emit("finished")
        return
    settings = point_default_database_at_target()
    if mode == "plan":
        read_only_connection()
    if mode == "migrate" and os.environ.get("MIGSNAP_ACCELERATE") == "1":
        accelerate()
    import django

    django.setup()
    refuse_other_aliases()
    require_postgresql()
    require_target_database()
    _ready = True
    emit("ready", settings=settings.SETTINGS_MODULE, django=django.get_version())
    if mode == "migrate":
        migrate()
    elif mode == "state":
        build_model_state()
    elif mode == "plan":
        plan()
    elif mode == "trace":
        trace()
    else:
        raise RuntimeError("unknown MIGSNAP_MODE %r" % mode)
    emit("finished")


# The django-fastmig releases `accelerate` was checked against (tests/accelproj,
# tests/it/accelerator.rs): only these are used.
ACCELERATOR_VERSIONS = ("0.1.1",)


def accelerate():
    """`build-accelerator` (issue #24): let django-fastmig, if the project's
    environment has it, patch Django's migration state before Django sets
    up, as its own docs and migsnap's benchmark do. Its code is never copied
    into migsnap: the project installs it. A failed import is not an error,
    the build goes on with stock Django and migsnap warns; `FASTMIG_DISABLE`
    (fastmig's own switch) leaves it installed but inactive, reported so."""
    try:
        import fastmig
    except ImportError as e:
        emit("accelerator", active=False, missing=first_line(e))
        return
    # `stock_where_unknown` reaches into fastmig's internals (its relation
    # graph cached on the state as `_fastmig_graph`, `uninstall()`): with a
    # version it was not checked against, a renamed cache would outlive a
    # stock migration unseen. Such a version is not used at all.
    version = getattr(fastmig, "__version__", None)
    usable = all(callable(getattr(fastmig, f, None)) for f in ("install", "uninstall", "installed"))
    if version not in ACCELERATOR_VERSIONS or not usable:
        emit("accelerator", active=False, unsupported=str(version))
        return
    fastmig.install()
    active = bool(fastmig.installed())
    emit("accelerator", active=active)
    if active:
        stock_where_unknown(fastmig)


def stock_where_unknown(fastmig):
    """The accelerator knows Django's own operations and relation fields
    (django-fastmig is tested on Django's suite); a migration with anything
    else (a third-party operation that changes several models' state but
    reloads one, a relation field of a package's own) is applied, or
    unapplied, with stock Django: fastmig taken out around it and put back
    after, its relation graph (a cache of the state's models) dropped from
    the state so that it is rebuilt from what stock Django left. Each such
    migration is reported (`stock` events; `prepare --json` lists them)."""
    from django.db.migrations.migration import Migration

    def stock_for(name):
        original = getattr(Migration, name)

        def wrapper(self, project_state, *args, **kwargs):
            why = unknown_to_accelerator(self)
            if why is None:
                return original(self, project_state, *args, **kwargs)
            if name != "mutate_state":
                emit("stock", migration=label(self), why=why)
            fastmig.uninstall()
            try:
                state = original(self, project_state, *args, **kwargs)
            finally:
                fastmig.install()
                forget_rendered(project_state)
            forget_rendered(state)
            return state

        setattr(Migration, name, wrapper)

    def forget_rendered(state):
        """Drop what django-fastmig would carry over from a state stock
        Django changed: its relation graph, and the rendered classes. Stock
        Django re-renders related models (taggit's Tag behind a
        TaggableManager) that classes rendered before still point to;
        django-fastmig, reloading one of those later, finds the stale
        target and raises `cannot re-link` for a field it only re-renders
        (netbox: ipam.0072_prefix_cached_relations after the taggit
        migrations ran stock). A full render after each such migration is
        what stock Django would do anyway."""
        state.__dict__.pop("_fastmig_graph", None)
        state.__dict__.pop("apps", None)

    # `mutate_state` too: unapplying computes every state on the way first.
    for name in ("apply", "unapply", "mutate_state"):
        stock_for(name)


def unknown_to_accelerator(migration):
    """Why the accelerator must not handle `migration` (None: it may):
    the first operation, or relation field an operation carries, whose
    class is not Django's own."""
    cached = migration.__dict__.get("_migsnap_unknown", False)
    if cached is not False:
        return cached
    why = None
    pending = list(migration.operations)
    while pending and why is None:
        op = pending.pop(0)
        if not is_djangos(type(op)):
            why = "operation %s" % qualified(type(op))
            break
        # SeparateDatabaseAndState: the operations inside count.
        pending += getattr(op, "state_operations", []) + getattr(op, "database_operations", [])
        fields = [f for _, f in getattr(op, "fields", [])] + [getattr(op, "field", None)]
        for field in fields:
            if getattr(field, "is_relation", False) and not is_djangos(type(field)):
                why = "relation field %s" % qualified(type(field))
                break
    migration.__dict__["_migsnap_unknown"] = why
    return why


def is_djangos(cls):
    return cls.__module__ == "django" or cls.__module__.startswith("django.")


def qualified(cls):
    return "%s.%s" % (cls.__module__, cls.__qualname__)


_called = False


def exit_with_parent():
    """If migsnap dies (kill -9), stop too: an orphaned migrate would keep
    writing into a build database nobody will use (the next run drops it
    anyway). Polls the parent pid; a daemon thread, so it never keeps the
    interpreter alive."""
    import threading

    parent = os.getppid()

    def watch():
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="migsnap-parent-watch", daemon=True).start()


def shown_path(path):
    """`path` relative to the project when it is inside it, else as it is."""
    try:
        rel = os.path.relpath(os.path.abspath(path), PROJECT_DIR)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def first_line(e):
    """The message's first line; a SyntaxError's with the file's path (its
    own message names the file without a directory: which app's
    `0005_x.py`?)."""
    if isinstance(e, SyntaxError) and e.filename:
        where = shown_path(e.filename)
        return "%s (%s, line %s)" % (e.msg, where, e.lineno) if e.lineno else "%s (%s)" % (e.msg, where)
    text = str(e).strip()
    return text.splitlines()[0] if text else ""


def missing_settings_module(e):
    """When `e` says the settings module itself (or a package it is in)
    does not exist, what to tell the user: which module, and what is
    missing. None when the settings module exists and something it imports
    is missing: then its own traceback says where."""
    if not isinstance(e, ModuleNotFoundError) or not e.name:
        return None
    module = os.environ.get("DJANGO_SETTINGS_MODULE") or ""
    if not (module == e.name or module.startswith(e.name + ".")):
        return None
    return "no module named %r (the settings module is `%s`, imported from `%s`)" % (
        e.name,
        module,
        PROJECT_DIR,
    )


def print_user_traceback(e, settings):
    """The traceback with the shim's own frames (and runpy's, which ran
    manage.py) left out; for a settings failure, Django's and importlib's
    too: what is left is the user's code, the part they can act on."""
    import importlib

    django_dir = None
    try:
        import django

        django_dir = os.path.dirname(os.path.abspath(django.__file__))
    except Exception:
        pass
    importlib_dir = os.path.dirname(os.path.abspath(importlib.__file__))

    def theirs(frame):
        name = frame.filename
        if name.startswith("<"):  # this shim (<string>), runpy, importlib (<frozen …>)
            return False
        if settings:
            path = os.path.abspath(name)
            for skipped in (django_dir, importlib_dir):
                if skipped and path.startswith(skipped + os.sep):
                    return False
        return True

    report = traceback.TracebackException.from_exception(e)
    seen = set()
    pending = [report]
    while pending:  # the exception and those it was raised from or during
        te = pending.pop()
        if id(te) in seen:
            continue
        seen.add(id(te))
        te.stack = traceback.StackSummary.from_list([f for f in te.stack if theirs(f)])
        pending.extend(x for x in (te.__cause__, te.__context__) if x is not None)
    sys.stderr.write("".join(report.format()))
    sys.stderr.flush()


def main():
    exit_with_parent()
    try:
        try:
            import django.core.management as management
        except ImportError as e:
            raise MigsnapError(
                "the interpreter %s cannot import Django (%s)" % (sys.executable, e),
                category="interpreter",
            )
        management.execute_from_command_line = run
        sys.argv = [MANAGE_PY, "migrate"]
        sys.path.insert(0, os.path.dirname(os.path.abspath(MANAGE_PY)))
        runpy.run_path(MANAGE_PY, run_name="__main__")
        if not _called:
            raise MigsnapError(
                "%s did not call django.core.management.execute_from_command_line" % MANAGE_PY
            )
    except SystemExit as e:
        if e.code not in (0, None):
            emit(
                "error",
                type="SystemExit",
                message="exited with status %s" % e.code,
                category="exit",
            )
            raise
    except MigsnapError as e:
        if e.category == "other_alias":  # raised in a migration: show which
            print_user_traceback(e, settings=False)
        emit("error", type="Configuration", message=str(e), category=e.category)
        sys.exit(1)
    except BaseException as e:  # report everything, including KeyboardInterrupt
        category = category_of(e)
        missing = missing_settings_module(e) if category == "settings" else None
        if missing:
            emit("error", type=type(e).__name__, message=missing, category="settings")
            sys.exit(1)
        print_user_traceback(e, settings=category == "settings")
        emit(
            "error",
            type=type(e).__name__,
            message=first_line(e),
            category=category,
        )
        sys.exit(1)


main()
