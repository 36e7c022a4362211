//! Resolve flags, environment and the config file into validated `Settings`:
//! the library's `Ctx` plus what only the binary uses. The library never
//! sees where a value came from.
//!
//! Precedence: command-line flag, then environment variable, then
//! `[tool.migsnap]` in pyproject.toml (or a top-level `migsnap.toml`), then a
//! default. One exception: the settings module is `--settings`, then the
//! config's `settings`, then `DJANGO_SETTINGS_MODULE` (Django's variable,
//! which a shell or pytest-django may export for its own reasons). Unknown
//! config keys are an error: a typo must not silently fall back to a default.
//!
//! Each layered setting is written once as `flag.combine(env).combine(file)`
//! over values that keep their `Origin`, so the order is visible per field
//! and a message can name where a bad value was set. The environment is
//! read once (`env::Environment`), which also lets the unit tests below pin
//! the precedence without touching the process's environment.

use migsnap::context::{
    BuildOptions, CacheDir, CloneStrategy, Ctx, DjangoRunner, RemoteSettings, ServerChoice,
};
use migsnap::env;
use migsnap::error::{Error, Kind, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// `[tool.migsnap]` / migsnap.toml, exactly as written by the user.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub python: Option<PathBuf>,
    pub settings: Option<String>,
    pub manage_py: Option<PathBuf>,
    pub migrations: Option<Vec<String>>,
    pub exclude: Option<Vec<String>>,
    pub key_inputs: Option<Vec<String>>,
    pub key_salt: Option<String>,
    pub server_url: Option<String>,
    pub cache_dir: Option<PathBuf>,
    /// File holding the secret that signs cached snapshots.
    pub cache_secret_file: Option<PathBuf>,
    /// `ed25519:<base64 or hex>` public keys whose signatures are accepted
    /// besides the signing key's own.
    pub trusted_keys: Option<Vec<String>>,
    /// The private key that signs what is written and pushed (default: the
    /// per-user key, made on first use).
    pub signing_key_file: Option<PathBuf>,
    /// Use snapshots no trusted key signed (for their own key only).
    pub trust_unsigned: Option<bool>,
    /// Migrate with django-fastmig when the project's environment has it.
    pub build_accelerator: Option<bool>,
    /// Check an accelerated build against stock Django before saving it.
    pub verify_build: Option<bool>,
    pub server_dir: Option<PathBuf>,
    /// Let the embedded server also listen on 127.0.0.1 at this port.
    pub server_port: Option<u16>,
    pub clone_strategy: Option<CloneStrategy>,
    /// Connections a cache restore uses (1 = one, in dump order).
    pub restore_jobs: Option<usize>,
    /// Extensions a restore may create (as the superuser, with fixed text).
    pub trusted_extensions: Option<Vec<String>>,
    /// Ready clones to keep for the current key (handed out by rename).
    pub pool: Option<usize>,
    /// The shared snapshot store: `s3://bucket/prefix` or `file:///dir`.
    pub remote: Option<String>,
    /// Push what `prepare` builds to the store (trusted CI jobs only).
    pub remote_push: Option<bool>,
    /// Seconds any one wait on the store may take.
    pub remote_timeout: Option<f64>,
    /// KiB per second below which a transfer with the store counts as stalled.
    pub remote_min_rate: Option<f64>,
    /// Finding kinds that make `check` exit 1.
    pub check_fail_on: Option<Vec<migsnap::check::FindingKind>>,
    /// `lint` rule id -> `off`, `warning` or `error`.
    pub lint_rules: Option<std::collections::BTreeMap<String, migsnap::lint::RuleLevel>>,
}

/// Where a setting's value came from, kept beside it so that a message
/// about a bad value names the place to fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag, e.g. `--cache-dir`.
    Flag(&'static str),
    /// An environment variable.
    Env(&'static str),
    /// A key of `[tool.migsnap]` / migsnap.toml.
    File(&'static str),
}

impl Origin {
    /// `value`, if given, as coming from here.
    fn with<T>(self, value: Option<T>) -> Option<Sourced<T>> {
        value.map(|value| Sourced {
            value,
            origin: self,
        })
    }
}

impl Origin {
    /// The flag, variable or key alone.
    pub fn name(&self) -> &'static str {
        match self {
            Origin::Flag(name) | Origin::Env(name) | Origin::File(name) => name,
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "`{flag}`"),
            Origin::Env(var) => write!(f, "{var}"),
            Origin::File(key) => write!(f, "`{key}` in the config"),
        }
    }
}

/// A setting's value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced<T> {
    pub value: T,
    pub origin: Origin,
}

/// uv's `Combine`: keep `self` when it has a value, else take `other`. A
/// setting's precedence is then one line, `flag.combine(env).combine(file)`,
/// the order docs/configuration.md states.
trait Combine {
    fn combine(self, other: Self) -> Self;
}

impl<T> Combine for Option<Sourced<T>> {
    fn combine(self, other: Self) -> Self {
        self.or(other)
    }
}

/// The Django settings module: the one setting whose config key beats its
/// variable (docs/configuration.md). `DJANGO_SETTINGS_MODULE` is Django's,
/// which a shell or pytest-django may export for its own reasons; the
/// project's config says what migsnap is for. None: manage.py's default.
fn settings_module(
    args: &Overrides,
    file: &FileConfig,
    e: &env::Environment,
) -> Option<Sourced<String>> {
    Origin::Flag("--settings")
        .with(args.settings.clone())
        .combine(Origin::File("settings").with(file.settings.clone()))
        .combine(Origin::Env(env::DJANGO_SETTINGS_MODULE).with(e.var(env::DJANGO_SETTINGS_MODULE)))
}

pub const DEFAULT_MIGRATIONS: &[&str] = &["**/migrations/*.py"];
/// Where projects declare their dependencies: a changed dependency may bring
/// new or changed third-party migrations (which the snapshot also records
/// and checks file by file; these make `migsnap key`, the CI cache key,
/// follow them too).
pub const DEFAULT_KEY_INPUTS: &[&str] = &[
    "pyproject.toml",
    "setup.cfg",
    "setup.py",
    "requirements*.txt",
    "requirements*.in",
    "requirements/**/*.txt",
    "requirements/**/*.in",
    "poetry.lock",
    "uv.lock",
    "Pipfile",
    "Pipfile.lock",
    "pdm.lock",
];

/// What the command line says, over the environment and the config file
/// (the binary fills it from its flags; the library knows no CLI).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub project_dir: Option<PathBuf>,
    pub server_url: Option<String>,
    pub cache_dir: Option<PathBuf>,
    pub remote: Option<String>,
    pub python: Option<PathBuf>,
    pub settings: Option<String>,
    pub quiet: bool,
    pub verbose: bool,
    /// The database alias the command is for (`--alias`; default `default`).
    pub alias: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// What the use cases take.
    pub ctx: Ctx,
    pub check_fail_on: Vec<migsnap::check::FindingKind>,
    pub lint_rules: std::collections::BTreeMap<String, migsnap::lint::RuleLevel>,
    pub quiet: bool,
    /// `pool` came from MIGSNAP_POOL or the config, not from what the
    /// pytest plugin recorded (`prepare --pool-default` may then set it).
    pub pool_configured: bool,
    /// How embedded servers run here, for any of them (`server ls`), not
    /// only the configured one.
    pub host: migsnap::embedded::Host,
}

impl Settings {
    /// One command's session over these settings: the key, the store and
    /// the connection resolved once, for every use case it runs.
    pub fn session(&self) -> migsnap::session::Session<'_> {
        migsnap::session::Session::new(&self.ctx)
    }

    /// The same settings, for another alias of the settings' DATABASES.
    pub fn for_alias(&self, alias: &str) -> Result<Settings> {
        let alias = checked_alias(alias)?;
        let mut settings = self.clone();
        settings.ctx.key.alias = alias.clone();
        settings.ctx.django.alias = alias;
        Ok(settings)
    }

    /// The settings from `args`, this process's environment and the
    /// config file.
    pub fn resolve(args: &Overrides) -> Result<Settings> {
        Settings::resolve_in(args, &env::Environment::from_process())
    }

    /// The settings from `args`, the environment `e` and the config file.
    pub fn resolve_in(args: &Overrides, e: &env::Environment) -> Result<Settings> {
        e.check()?;
        let cwd = std::env::current_dir().map_err(SettingsError::Cwd)?;
        let project_dir = match &args.project_dir {
            Some(p) => cwd.join(p),
            None => cwd,
        };
        if !project_dir.is_dir() {
            return Err(SettingsError::NoProjectDir { dir: project_dir }.into());
        }
        let project_dir = project_dir
            .canonicalize()
            .map_err(|source| SettingsError::Resolve {
                dir: project_dir.clone(),
                source,
            })?;
        let (file, config_file) = load_config(&project_dir)?;
        let rel = |p: &Path| project_dir.join(p);

        let cache_dir = match Origin::Flag("--cache-dir")
            .with(args.cache_dir.clone())
            .combine(Origin::Env(env::CACHE_DIR).with(e.path(env::CACHE_DIR)))
            .combine(Origin::File("cache-dir").with(file.cache_dir.as_deref().map(rel)))
        {
            Some(dir) => explicit_cache_dir(&project_dir.join(&dir.value), dir.origin)?,
            None => default_cache_dir()?,
        };

        let cache_secret = match e.bytes(env::CACHE_SECRET) {
            Some(s) => migsnap::store::CacheSecret::new(s),
            None => match &file.cache_secret_file {
                Some(f) => Some(read_secret_file(&rel(f))?),
                None => None,
            },
        };

        // Checked whether or not the embedded server is used: a bad value
        // is a mistake to say, not one to keep until it matters.
        let port = match e.var(env::SERVER_PORT) {
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or(SettingsError::PortVar { value: p })?,
            ),
            None if file.server_port == Some(0) => return Err(SettingsError::PortZero.into()),
            None => file.server_port,
        };

        let trust = trust(e, &file, cache_secret, &rel)?;

        // Where the PostgreSQL programs are, and how the embedded server
        // runs: resolved here, so the library reads no environment.
        let programs = migsnap::pg::tools::Programs {
            bindir: e.path(env::PG_BINDIR),
            path: e.dirs(env::PATH),
        };
        let host = migsnap::embedded::Host {
            programs: programs.clone(),
            lock_timeout: e
                .seconds(env::SERVER_LOCK_TIMEOUT)?
                .unwrap_or(migsnap::embedded::DEFAULT_LOCK_TIMEOUT),
            user: e
                .var(env::SERVER_USER)
                .unwrap_or_else(|| "postgres".to_string()),
        };

        let server = match Origin::Flag("--server-url")
            .with(args.server_url.clone())
            .combine(Origin::Env(env::SERVER_URL).with(e.var(env::SERVER_URL)))
            .combine(Origin::File("server-url").with(file.server_url.clone()))
        {
            Some(url) => ServerChoice::Url(url.value),
            None => {
                let dir = Origin::Env(env::SERVER_DIR)
                    .with(e.path(env::SERVER_DIR))
                    .combine(Origin::File("server-dir").with(file.server_dir.as_deref().map(rel)))
                    .map_or_else(
                        || migsnap::embedded::default_server_dir(&cache_dir),
                        |d| d.value,
                    );
                ServerChoice::Embedded(migsnap::embedded::Embedded::new(&dir, port, host.clone()))
            }
        };

        let python = Origin::Flag("--python")
            .with(args.python.clone())
            .combine(Origin::Env(env::PYTHON).with(e.path(env::PYTHON)))
            .combine(Origin::File("python").with(file.python.as_deref().map(rel)))
            .map_or_else(|| default_python(e, &project_dir), |p| p.value);

        let restore_jobs = match file.restore_jobs {
            None => migsnap::pg::restore::DEFAULT_JOBS,
            Some(n @ 1..=migsnap::pg::restore::MAX_JOBS) => n,
            Some(n) => {
                return Err(SettingsError::RestoreJobs {
                    n,
                    config: config_file,
                }
                .into())
            }
        };
        let django_settings = settings_module(args, &file, e).map(|m| m.value);

        let pool_configured = e.var(env::POOL).is_some() || file.pool.is_some();
        let pool = match e.var(env::POOL) {
            Some(p) => p
                .parse::<usize>()
                .ok()
                .filter(|n| *n <= MAX_POOL)
                .ok_or(SettingsError::PoolVar { value: p })?,
            None => match file.pool {
                Some(n) if n > MAX_POOL => return Err(SettingsError::PoolKey { n }.into()),
                Some(n) => n,
                // What the last pytest run asked for (its worker count).
                None => read_pool_hint(&cache_dir),
            },
        };
        let remote = remote_settings(e, args, &file)?;
        let manage_py = rel(file.manage_py.as_deref().unwrap_or(Path::new("manage.py")));
        // The key names the module that will be used: the one given, else
        // manage.py's default (one small read), so that naming that default
        // explicitly is not another snapshot.
        let key_settings = django_settings.clone().or_else(|| {
            // Not waiting on a FIFO there, nor reading /dev/zero: a manage.py
            // that is no plain file has no default to give (and the command
            // stops at it as at a missing one, `django::check_manage_py`).
            migsnap::files::read_plain(&manage_py, MANAGE_PY_MAX)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .and_then(|source| migsnap::django::manage_py_settings_module(&source))
        });
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let alias = match &args.alias {
            Some(a) => checked_alias(a)?,
            None => migsnap::fingerprint::DEFAULT_ALIAS.to_string(),
        };
        // Migrations that MIGRATION_MODULES moves out of `*/migrations/`
        // count in the key too, found in the settings' text (no Python):
        // otherwise a CI cache keyed on `migsnap key` never changes when
        // they do (issue #22).
        let mut migrations = file.migrations.unwrap_or_else(|| owned(DEFAULT_MIGRATIONS));
        // Module names are relative to manage.py's dir (its sys.path[0]);
        // the globs, to the project dir.
        let import_root = manage_py.parent().unwrap_or(&project_dir);
        let prefix = match import_root
            .strip_prefix(&project_dir)
            .ok()
            .and_then(Path::to_str)
        {
            Some("") => Some(String::new()),
            Some(sub) => Some(format!("{sub}/")),
            None => None,
        };
        if let (Some(module), Some(prefix)) = (&key_settings, prefix) {
            for dir in migsnap::django::migration_module_dirs(import_root, module) {
                let glob = format!("{prefix}{dir}/*.py");
                if !migrations.contains(&glob) {
                    migrations.push(glob);
                }
            }
        }
        let stat_cache = migsnap::statcache::path_for(&cache_dir, &project_dir);
        // Opt-in while django-fastmig is experimental (docs/accelerator.md).
        let accelerate = env_bool(e, env::BUILD_ACCELERATOR)?
            .unwrap_or_else(|| file.build_accelerator.unwrap_or(false));
        let verify =
            env_bool(e, env::VERIFY_BUILD)?.unwrap_or_else(|| file.verify_build.unwrap_or(false));
        let ctx = Ctx {
            django: DjangoRunner {
                python,
                manage_py,
                settings_module: django_settings,
                project_dir: project_dir.clone(),
                echo_output: args.verbose,
                alias: alias.clone(),
                accelerate,
            },
            key: migsnap::fingerprint::KeySpec {
                root: project_dir,
                migrations,
                exclude: file.exclude.unwrap_or_default(),
                inputs: file.key_inputs.unwrap_or_else(|| owned(DEFAULT_KEY_INPUTS)),
                salt: file.key_salt.unwrap_or_default(),
                settings_module: key_settings,
                alias,
                stat_cache: Some(stat_cache),
                accelerated: accelerate,
            },
            server,
            cache: CacheDir::new(cache_dir, trust),
            build: BuildOptions {
                clone_strategy: file.clone_strategy.unwrap_or_default(),
                restore_jobs,
                trusted_extensions: file
                    .trusted_extensions
                    .unwrap_or_else(|| owned(migsnap::pg::extension::DEFAULT_TRUSTED)),
                programs,
                verify,
            },
            pool,
            remote,
        };
        Ok(Settings {
            ctx,
            check_fail_on: file
                .check_fail_on
                .unwrap_or_else(migsnap::check::default_fail_on),
            lint_rules: lint_rules(file.lint_rules.unwrap_or_default())?,
            quiet: args.quiet,
            pool_configured,
            host,
        })
    }
}

/// `lint-rules`, with every id checked: a typo must not leave a rule on.
/// An alias as DATABASES keys are written in practice: it names snapshots
/// in `ls` and goes to Python in the environment, so nothing odd.
fn checked_alias(alias: &str) -> Result<String> {
    let ok = !alias.is_empty()
        && alias.len() <= 63
        && alias
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(alias.to_string())
    } else {
        Err(SettingsError::Alias {
            alias: alias.to_string(),
        }
        .into())
    }
}

fn lint_rules(
    rules: std::collections::BTreeMap<String, migsnap::lint::RuleLevel>,
) -> Result<std::collections::BTreeMap<String, migsnap::lint::RuleLevel>> {
    let known: Vec<&str> = migsnap::lint::RULES.iter().map(|(id, ..)| *id).collect();
    if let Some(bad) = rules.keys().find(|id| !known.contains(&id.as_str())) {
        return Err(SettingsError::LintRule { rule: bad.clone() }.into());
    }
    Ok(rules)
}

/// The longest `remote-timeout` accepted: a wait longer than an hour is a
/// hang, not a slow store.
const MAX_REMOTE_TIMEOUT: f64 = 3600.0;
/// The highest `remote-min-rate` accepted, KiB/s (10 GiB/s): above it,
/// every store would be "stalled".
const MAX_REMOTE_MIN_RATE: f64 = 10.0 * 1024.0 * 1024.0;

/// `remote`, `remote-push`, `remote-timeout`: flag over environment over
/// config. `MIGSNAP_REMOTE=off` turns a configured store off for one run.
fn remote_settings(
    e: &env::Environment,
    args: &Overrides,
    file: &FileConfig,
) -> Result<Option<RemoteSettings>> {
    let push = env_bool(e, env::REMOTE_PUSH)?.unwrap_or(file.remote_push.unwrap_or(false));
    let timeout = bounded_number(
        e,
        (env::REMOTE_TIMEOUT, "remote-timeout"),
        file.remote_timeout,
        (0.001, MAX_REMOTE_TIMEOUT),
        "a number of seconds",
    )?
    .map_or(
        migsnap::remote::DEFAULT_TIMEOUT,
        std::time::Duration::from_secs_f64,
    );
    // At least one byte per second: below that, nothing is a stall.
    let min_rate = bounded_number(
        e,
        (env::REMOTE_MIN_RATE, "remote-min-rate"),
        file.remote_min_rate,
        (1.0 / 1024.0, MAX_REMOTE_MIN_RATE),
        "a number of KiB per second",
    )?
    .map_or(migsnap::remote::DEFAULT_MIN_RATE, |r| (r * 1024.0) as u64);
    // The values above are checked even with no store configured.
    let url = Origin::Flag("--remote-url")
        .with(args.remote.clone())
        .combine(Origin::Env(env::REMOTE).with(e.var(env::REMOTE)))
        .combine(Origin::File("remote").with(file.remote.clone()));
    let Some(url) = url.filter(|u| u.value != "off") else {
        return Ok(None);
    };
    let url = migsnap::remote::Url::parse(&url.value)?;
    Ok(Some(RemoteSettings {
        url,
        push,
        timeout,
        min_rate,
        env: e.backend_vars(),
    }))
}

/// A number setting from the environment variable `var`, else the config
/// key `key`, within `lo..=hi`. An error names where the bad value came
/// from: the variable, or the key.
fn bounded_number(
    e: &env::Environment,
    (var, key): (&'static str, &'static str),
    file: Option<f64>,
    (lo, hi): (f64, f64),
    what: &'static str,
) -> Result<Option<f64>> {
    let fits = |v: f64| v.is_finite() && v >= lo && v <= hi;
    if let Some(text) = e.var(var) {
        return match text.trim().parse::<f64>() {
            Ok(v) if fits(v) => Ok(Some(v)),
            _ => Err(SettingsError::NumberVar {
                var,
                what,
                hi,
                value: text,
            }
            .into()),
        };
    }
    match file {
        Some(value) if !fits(value) => Err(SettingsError::NumberKey {
            key,
            what,
            hi,
            value,
        }
        .into()),
        other => Ok(other),
    }
}

/// The most clones a pool may hold: each is a full copy of the template.
pub const MAX_POOL: usize = 64;
/// Where `prepare --pool-default N` (the pytest plugin, with its worker
/// count) records the pool size for runs that configure none.
pub const POOL_HINT_FILE: &str = "pool-size";

fn read_pool_hint(cache_dir: &Path) -> usize {
    migsnap::files::read_no_follow(&cache_dir.join(POOL_HINT_FILE))
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|t| t.trim().parse::<usize>().ok())
        .map_or(0, |n| n.min(MAX_POOL))
}

/// Read migsnap.toml, else `[tool.migsnap]` from pyproject.toml. Both are
/// deserialised from their whole text, so an error has a span in it.
fn load_config(project_dir: &Path) -> Result<(FileConfig, Option<PathBuf>)> {
    /// pyproject.toml as far as migsnap cares: other tables are others'.
    #[derive(Deserialize)]
    struct Pyproject {
        tool: Option<Tools>,
    }
    #[derive(Deserialize)]
    struct Tools {
        migsnap: Option<FileConfig>,
    }
    let own = project_dir.join("migsnap.toml");
    if own.is_file() {
        let text = read_text(&own)?;
        let cfg = toml::from_str::<FileConfig>(&text).map_err(|e| config_error(&own, &text, e))?;
        return Ok((cfg, Some(own)));
    }
    let pyproject = project_dir.join("pyproject.toml");
    if pyproject.is_file() {
        let text = read_text(&pyproject)?;
        let doc: Pyproject =
            toml::from_str(&text).map_err(|e| config_error(&pyproject, &text, e))?;
        if let Some(cfg) = doc.tool.and_then(|t| t.migsnap) {
            return Ok((cfg, Some(pyproject)));
        }
    }
    Ok((FileConfig::default(), None))
}

/// The most of `manage.py` read for its default settings module (a
/// generated one is about 700 bytes; the cap only stops a sparse file of
/// gigabytes from being read whole).
const MANAGE_PY_MAX: u64 = 64 << 20;

/// The most a `cache-secret-file` may hold.
const SECRET_MAX: u64 = 64 << 10;

/// The secret in `cache-secret-file`: it must exist, be readable, be closed
/// to group and others (like an ssh key), and not be empty. Trailing
/// whitespace (the newline of `echo … > file`) is not part of it.
fn read_secret_file(path: &Path) -> Result<migsnap::store::CacheSecret> {
    use std::os::unix::fs::PermissionsExt;
    let bytes = migsnap::files::read_plain(path, SECRET_MAX).map_err(|source| {
        SettingsError::SecretUnreadable {
            path: path.to_path_buf(),
            source,
        }
    })?;
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0);
    if mode & 0o077 != 0 {
        return Err(SettingsError::SecretOpen {
            path: path.to_path_buf(),
            mode,
        }
        .into());
    }
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    migsnap::store::CacheSecret::new(bytes[..end].to_vec()).ok_or_else(|| {
        SettingsError::SecretEmpty {
            path: path.to_path_buf(),
        }
        .into()
    })
}

/// Who signs and who is believed (issue #21): nothing is read here (the
/// signing key is read when something is signed, never on the warm path),
/// only named and parsed.
fn trust(
    e: &env::Environment,
    file: &FileConfig,
    secret: Option<migsnap::store::CacheSecret>,
    rel: &dyn Fn(&Path) -> PathBuf,
) -> Result<migsnap::sign::Trust> {
    use migsnap::sign::{KeySource, PublicKey, Signer, Trust};
    let source = match Origin::Env(env::SIGNING_KEY_FILE)
        .with(e.var(env::SIGNING_KEY_FILE).map(PathBuf::from))
        .combine(Origin::File("signing-key-file").with(file.signing_key_file.clone()))
    {
        Some(p) => KeySource::File(rel(&p.value)),
        None => KeySource::UserDir(user_key_dir()?),
    };
    let listed = |v: String| {
        v.split([',', ' ', '\n'])
            .filter(|t| !t.trim().is_empty())
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let trusted = Origin::Env(env::TRUSTED_KEYS)
        .with(e.var(env::TRUSTED_KEYS).map(listed))
        .combine(Origin::File("trusted-keys").with(file.trusted_keys.clone()));
    let keys = trusted.map_or(Ok(vec![]), |Sourced { value, origin }| {
        value
            .iter()
            .map(|t| {
                PublicKey::parse(t).ok_or_else(|| {
                    SettingsError::PublicKey {
                        origin,
                        key: t.trim().to_string(),
                    }
                    .into()
                })
            })
            .collect::<Result<Vec<_>>>()
    })?;
    Ok(Trust {
        signer: Some(std::sync::Arc::new(Signer::new(source))),
        keys,
        secret,
        trust_unsigned: trust_unsigned(e, file)?,
    })
}

/// `trust-unsigned`: the variable, else the config, else off.
fn trust_unsigned(e: &env::Environment, file: &FileConfig) -> Result<bool> {
    Ok(env_bool(e, env::TRUST_UNSIGNED)?.unwrap_or_else(|| file.trust_unsigned.unwrap_or(false)))
}

/// Where the per-user signing key lives: the user's data dir, not the
/// cache dir. A cache dir is often restored from a CI cache that a fork's
/// pull request may have written; a key kept in it would arrive with the
/// snapshots it is meant to vouch for.
pub fn user_key_dir() -> Result<PathBuf> {
    directories::ProjectDirs::from("", "", "migsnap")
        .map(|d| d.data_dir().join("keys"))
        .ok_or_else(|| SettingsError::NoDataDir.into())
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| {
        SettingsError::Read {
            path: path.to_path_buf(),
            source,
        }
        .into()
    })
}

/// One line saying where (`file:line:col`) and what, in words; the line
/// itself as detail; a "did you mean" for a misspelt key.
fn config_error(path: &Path, text: &str, e: toml::de::Error) -> Error {
    let section = if path.ends_with("pyproject.toml") {
        " in [tool.migsnap]"
    } else {
        ""
    };
    let mut at = path.display().to_string();
    let mut detail = None;
    if let Some(span) = e.span() {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before[start..].chars().count() + 1;
        at = format!("{at}:{line}:{col}");
        let shown = text[start..].split('\n').next().unwrap_or("");
        detail = Some(format!("{line:>5} | {}", shown.trim_end_matches('\r')));
    }
    // toml's message may span lines; keep the gist.
    let message = e.message().trim().replace('\n', " ");
    let (message, fix) = match unknown_key(&message) {
        Some((key, known)) => {
            let fix = match closest(&key, &known) {
                Some(near) => ConfigFix::DidYouMean(near.to_string()),
                None => ConfigFix::KnownKeys(known),
            };
            (format!("unknown key `{key}`"), fix)
        }
        None if message.starts_with("invalid type") || message.starts_with("invalid value") => {
            (in_words(&message), ConfigFix::Type)
        }
        None => (message, ConfigFix::Toml),
    };
    let err = Error::from(SettingsError::Config {
        at,
        section,
        message,
        fix,
    });
    match detail {
        Some(d) => err.detail(d),
        None => err,
    }
}

/// serde's "unknown field `x`, expected one of `a`, `b`" as (x, [a, b]).
fn unknown_key(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (key, rest) = rest.split_once('`')?;
    let known = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((key.to_string(), known))
}

/// The known key nearest to `key`, if it is near enough to be a typo
/// (`cache_dir` for `cache-dir`, `pyhton` for `python`).
fn closest<'a>(key: &str, known: &'a [String]) -> Option<&'a str> {
    let key = key.to_ascii_lowercase().replace('_', "-");
    known
        .iter()
        .map(|k| (edit_distance(&key, k), k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.as_str())
}

/// Levenshtein distance, counting a swap of two neighbours as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// serde names Rust types ("expected u16"); say what to write instead.
fn in_words(message: &str) -> String {
    const WORDS: &[(&str, &str)] = &[
        (
            "expected u16",
            "expected a port number (a whole number from 1 to 65535, no quotes)",
        ),
        ("expected usize", "expected a whole number (no quotes)"),
        (
            "expected a sequence",
            "expected a list, e.g. [\"a\", \"b\"]",
        ),
        ("expected a string", "expected a string in quotes"),
    ];
    WORDS
        .iter()
        .find(|(rust, _)| message.contains(rust))
        .map_or_else(
            || message.to_string(),
            |(rust, words)| message.replace(rust, words),
        )
}

/// An explicitly configured cache dir may be created, but not its parents: a
/// typo in the path should not grow a directory tree somewhere unexpected.
fn explicit_cache_dir(dir: &Path, origin: Origin) -> Result<PathBuf> {
    if !dir.is_dir() {
        let parent_ok = dir.parent().is_some_and(|p| p.is_dir());
        if !parent_ok {
            return Err(SettingsError::NoCacheParent {
                dir: dir.to_path_buf(),
                origin,
            }
            .into());
        }
    }
    Ok(dir.to_path_buf())
}

fn default_cache_dir() -> Result<PathBuf> {
    directories::ProjectDirs::from("", "", "migsnap")
        .map(|d| d.cache_dir().to_path_buf())
        .ok_or_else(|| SettingsError::NoCacheDir.into())
}

/// MIGSNAP_PYTHON and config are handled by the caller; then an active
/// virtualenv, the project's `.venv`, and finally `python3` on PATH.
fn default_python(e: &env::Environment, project_dir: &Path) -> PathBuf {
    if let Some(venv) = e.path(env::VIRTUAL_ENV) {
        let p = venv.join("bin/python");
        if p.exists() {
            return p;
        }
    }
    let local = project_dir.join(".venv/bin/python");
    if local.exists() {
        return local;
    }
    PathBuf::from("python3")
}

/// A boolean environment variable (`1`/`true`/`yes`/`on` or
/// `0`/`false`/`no`/`off`, any case), None when unset; anything else is
/// an error naming the variable.
fn env_bool(e: &env::Environment, name: &'static str) -> Result<Option<bool>> {
    let Some(v) = e.var(name) else {
        return Ok(None);
    };
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(Some(true)),
        "0" | "false" | "no" | "off" => Ok(Some(false)),
        _ => Err(SettingsError::NotBool { name, value: v }.into()),
    }
}

/// A setting migsnap cannot use, as data: where it was set and what is
/// wrong with it. `commands::hints` says how to fix each, beside the
/// library's errors, so every hint is written in one place.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read the current directory")]
    Cwd(#[source] std::io::Error),
    #[error("project directory `{}` does not exist", .dir.display())]
    NoProjectDir { dir: PathBuf },
    #[error("cannot resolve `{}`", .dir.display())]
    Resolve {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{} must be a port number (1 to 65535), not `{value}`",
        env::SERVER_PORT
    )]
    PortVar { value: String },
    #[error("server-port = 0 is out of range")]
    PortZero,
    /// `config`: the file that set it.
    #[error("restore-jobs = {n} is out of range")]
    RestoreJobs { n: usize, config: Option<PathBuf> },
    #[error("{} must be a number from 0 to {MAX_POOL}, not `{value}`", env::POOL)]
    PoolVar { value: String },
    #[error("pool = {n} is out of range")]
    PoolKey { n: usize },
    #[error("`{alias}` is not a database alias migsnap can use")]
    Alias { alias: String },
    #[error("unknown lint rule `{rule}` in lint-rules")]
    LintRule { rule: String },
    /// A number variable (`var`) that does not parse or is out of range;
    /// `what` says what it counts.
    #[error("{var} must be {what} above 0 and at most {hi}, not `{value}`")]
    NumberVar {
        var: &'static str,
        what: &'static str,
        hi: f64,
        value: String,
    },
    /// The same, from the config's `key`.
    #[error("{key} = {value} is out of range")]
    NumberKey {
        key: &'static str,
        what: &'static str,
        hi: f64,
        value: f64,
    },
    #[error("cannot read the cache secret file `{}`", .path.display())]
    SecretUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the cache secret file `{}` has mode {mode:04o}: group or others have access to it",
        .path.display()
    )]
    SecretOpen { path: PathBuf, mode: u32 },
    #[error("the cache secret file `{}` is empty", .path.display())]
    SecretEmpty { path: PathBuf },
    #[error("{}: `{key}` is not an Ed25519 public key", .origin.name())]
    PublicKey { origin: Origin, key: String },
    #[error("cannot find a data directory for this user's signing key (no home directory)")]
    NoDataDir,
    #[error("cannot read `{}`", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `at` is `file:line:col` (the line goes in the error's detail),
    /// `section` ` in [tool.migsnap]` for pyproject.toml.
    #[error("invalid config `{at}`{section}: {message}")]
    Config {
        at: String,
        section: &'static str,
        message: String,
        fix: ConfigFix,
    },
    /// An explicit cache dir may be created, not its parents.
    #[error("cache directory `{}` does not exist and neither does its parent", .dir.display())]
    NoCacheParent { dir: PathBuf, origin: Origin },
    #[error("cannot find a cache directory for this user (no home directory)")]
    NoCacheDir,
    /// A boolean variable `name` set to something else.
    #[error("{name} must be true or false, not `{value}`")]
    NotBool { name: &'static str, value: String },
}

/// What is wrong with a config file, for its hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigFix {
    /// An unknown key, close to this known one.
    DidYouMean(String),
    /// An unknown key near none of these, the keys migsnap reads.
    KnownKeys(Vec<String>),
    /// A value of the wrong type.
    Type,
    /// Not TOML at all.
    Toml,
}

impl migsnap::error::Typed for SettingsError {
    fn kind(&self) -> Kind {
        Kind::Usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A project dir with `config` as its migsnap.toml.
    fn project(config: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("migsnap.toml"), config).expect("write config");
        dir
    }

    fn resolved(dir: &Path, args: Overrides, vars: &[(&str, &str)]) -> Settings {
        let args = Overrides {
            project_dir: Some(dir.to_path_buf()),
            ..args
        };
        Settings::resolve_in(&args, &env::Environment::from_pairs(vars.iter().copied()))
            .expect("resolve")
    }

    /// docs/configuration.md: the settings module is `--settings`, then the
    /// config's `settings`, then DJANGO_SETTINGS_MODULE (the one setting
    /// whose config key beats its variable), then manage.py's default.
    #[test]
    fn the_settings_module_is_flag_then_config_then_environment() {
        let with_key = project("settings = \"from.config\"\n");
        let without = project("");
        let env = [(env::DJANGO_SETTINGS_MODULE, "from.env")];
        let module = |dir: &Path, flag: Option<&str>, vars: &[(&str, &str)]| {
            let args = Overrides {
                settings: flag.map(str::to_string),
                ..Default::default()
            };
            resolved(dir, args, vars).ctx.django.settings_module
        };
        assert_eq!(
            module(with_key.path(), Some("from.flag"), &env).as_deref(),
            Some("from.flag")
        );
        assert_eq!(
            module(with_key.path(), None, &env).as_deref(),
            Some("from.config")
        );
        assert_eq!(
            module(without.path(), None, &env).as_deref(),
            Some("from.env")
        );
        assert_eq!(module(without.path(), None, &[]), None);
        let file: FileConfig = toml::from_str("settings = \"from.config\"").expect("toml");
        let picked = settings_module(
            &Overrides::default(),
            &file,
            &env::Environment::from_pairs(env),
        );
        assert_eq!(picked.map(|m| m.origin), Some(Origin::File("settings")));
    }

    /// Every other setting: flag, then environment, then config file.
    #[test]
    fn every_other_setting_is_flag_then_environment_then_config() {
        let dirs: Vec<tempfile::TempDir> = (0..3)
            .map(|_| tempfile::tempdir().expect("tempdir"))
            .collect();
        let [flag_dir, env_dir, file_dir] = [0, 1, 2].map(|i| dirs[i].path().to_path_buf());
        let p = project(&format!(
            "cache-dir = \"{}\"\npython = \"/file/python\"\nserver-url = \"postgres://file\"\nremote = \"file:///file-store\"\npool = 2\n",
            file_dir.display()
        ));
        let flags = Overrides {
            cache_dir: Some(flag_dir.clone()),
            python: Some("/flag/python".into()),
            server_url: Some("postgres://flag".into()),
            remote: Some("file:///flag-store".into()),
            ..Default::default()
        };
        let vars = [
            (env::CACHE_DIR, env_dir.to_str().expect("utf-8")),
            (env::PYTHON, "/env/python"),
            (env::SERVER_URL, "postgres://env"),
            (env::REMOTE, "file:///env-store"),
            (env::POOL, "3"),
        ];
        let seen = |s: &Settings| {
            let server = match &s.ctx.server {
                ServerChoice::Url(u) => u.clone(),
                ServerChoice::Embedded(_) => "embedded".into(),
            };
            let remote = s.ctx.remote.as_ref().map(|r| r.url.to_string());
            (
                s.ctx.cache.dir.clone(),
                s.ctx.django.python.display().to_string(),
                server,
                remote.unwrap_or_default(),
                s.ctx.pool,
            )
        };
        assert_eq!(
            seen(&resolved(p.path(), flags, &vars)),
            (
                flag_dir,
                "/flag/python".into(),
                "postgres://flag".into(),
                "file:///flag-store".into(),
                3
            )
        );
        assert_eq!(
            seen(&resolved(p.path(), Overrides::default(), &vars)),
            (
                env_dir,
                "/env/python".into(),
                "postgres://env".into(),
                "file:///env-store".into(),
                3
            )
        );
        assert_eq!(
            seen(&resolved(p.path(), Overrides::default(), &[])),
            (
                file_dir,
                "/file/python".into(),
                "postgres://file".into(),
                "file:///file-store".into(),
                2
            )
        );
    }

    /// A bad value's message names where it came from.
    #[test]
    fn a_bad_cache_dir_names_where_it_was_set() {
        let p = project("");
        let missing = p.path().join("no/such/cache");
        let args = Overrides {
            project_dir: Some(p.path().to_path_buf()),
            ..Default::default()
        };
        let vars = [(env::CACHE_DIR, missing.to_str().expect("utf-8"))];
        let err =
            Settings::resolve_in(&args, &env::Environment::from_pairs(vars)).expect_err("refused");
        // The hint is written where every hint is, from the error's data.
        let err = crate::commands::hints::add(err);
        assert!(
            err.hint
                .as_deref()
                .is_some_and(|h| h.contains(env::CACHE_DIR)),
            "{err:?}"
        );
    }

    /// `build-accelerator` reaches the key, the shim and nothing else;
    /// `verify-build` the build; the variable beats the config; both off
    /// by default.
    #[test]
    fn the_accelerator_settings_are_off_unless_asked_and_the_variable_wins() {
        let accel = |s: &Settings| {
            (
                s.ctx.key.accelerated,
                s.ctx.django.accelerate,
                s.ctx.build.verify,
            )
        };
        let p = project("");
        assert_eq!(
            accel(&resolved(p.path(), Overrides::default(), &[])),
            (false, false, false)
        );
        let p = project("build-accelerator = true\nverify-build = true\n");
        assert_eq!(
            accel(&resolved(p.path(), Overrides::default(), &[])),
            (true, true, true)
        );
        let off = [(env::BUILD_ACCELERATOR, "0"), (env::VERIFY_BUILD, "no")];
        assert_eq!(
            accel(&resolved(p.path(), Overrides::default(), &off)),
            (false, false, false)
        );
    }

    #[test]
    fn misspelt_keys_are_matched_to_the_nearest_known_one() {
        let known: Vec<String> = ["python", "cache-dir", "server-port", "pool"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(closest("cache_dir", &known), Some("cache-dir"));
        assert_eq!(closest("pyhton", &known), Some("python"));
        assert_eq!(closest("server_prot", &known), Some("server-port"));
        assert_eq!(closest("colour", &known), None);
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("abc", "acb"), 1);
    }
}
