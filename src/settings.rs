//! Resolve flags, environment and the config file into validated `Settings`:
//! the library's `Ctx` plus what only the binary uses. The library never
//! sees where a value came from.
//!
//! Precedence is always: command-line flag, then environment variable, then
//! `[tool.migsnap]` in pyproject.toml (or a top-level `migsnap.toml`), then a
//! default. Unknown config keys are an error: a typo must not silently fall
//! back to a default.

use migsnap::context::{BuildOptions, CacheDir, CloneStrategy, Ctx, DjangoRunner, ServerChoice};
use migsnap::env;
use migsnap::error::{Context, Error, Kind, Result};
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
    pub server_dir: Option<PathBuf>,
    /// Let the embedded server also listen on 127.0.0.1 at this port.
    pub server_port: Option<u16>,
    pub clone_strategy: Option<CloneStrategy>,
    /// Connections a cache restore uses (1 = one, in dump order).
    pub restore_jobs: Option<usize>,
    /// Ready clones to keep for the current key (handed out by rename).
    pub pool: Option<usize>,
    /// Finding kinds that make `check` exit 1.
    pub check_fail_on: Option<Vec<migsnap::check::FindingKind>>,
    /// `lint` rule id -> `off`, `warning` or `error`.
    pub lint_rules: Option<std::collections::BTreeMap<String, migsnap::lint::RuleLevel>>,
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
    pub python: Option<PathBuf>,
    pub settings: Option<String>,
    pub quiet: bool,
    pub verbose: bool,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// What the use cases take.
    pub ctx: Ctx,
    pub check_fail_on: Vec<migsnap::check::FindingKind>,
    pub lint_rules: std::collections::BTreeMap<String, migsnap::lint::RuleLevel>,
    pub quiet: bool,
}

impl Settings {
    pub fn resolve(args: &Overrides) -> Result<Settings> {
        let cwd = std::env::current_dir()
            .with_kind(Kind::Usage, || "cannot read the current directory".into())?;
        let project_dir = match &args.project_dir {
            Some(p) => cwd.join(p),
            None => cwd,
        };
        if !project_dir.is_dir() {
            return Err(Error::usage(format!(
                "project directory `{}` does not exist",
                project_dir.display()
            ))
            .hint("run migsnap from your Django project root or pass `-C DIR`"));
        }
        let project_dir = project_dir.canonicalize().with_kind(Kind::Usage, || {
            format!("cannot resolve `{}`", project_dir.display())
        })?;
        let (file, config_file) = load_config(&project_dir)?;
        let rel = |p: &Path| project_dir.join(p);

        let cache_dir = match args
            .cache_dir
            .clone()
            .or_else(|| env::var(env::CACHE_DIR).map(PathBuf::from))
            .or_else(|| file.cache_dir.as_deref().map(rel))
        {
            Some(dir) => explicit_cache_dir(&project_dir.join(dir))?,
            None => default_cache_dir()?,
        };

        let cache_secret = match env::var(env::CACHE_SECRET) {
            Some(s) => migsnap::store::CacheSecret::new(s.into_bytes()),
            None => match &file.cache_secret_file {
                Some(f) => Some(read_secret_file(&rel(f))?),
                None => None,
            },
        };

        let server = match args
            .server_url
            .clone()
            .or_else(|| env::var(env::SERVER_URL))
            .or_else(|| file.server_url.clone())
        {
            Some(url) => ServerChoice::Url(url),
            None => {
                let dir = env::var(env::SERVER_DIR)
                    .map(PathBuf::from)
                    .or_else(|| file.server_dir.as_deref().map(rel))
                    .unwrap_or_else(|| migsnap::embedded::default_server_dir(&cache_dir));
                let port = match env::var(env::SERVER_PORT) {
                    Some(p) => Some(p.parse::<u16>().map_err(|_| {
                        Error::usage(format!(
                            "{} must be a port number, not `{p}`",
                            env::SERVER_PORT
                        ))
                        .hint("e.g. MIGSNAP_SERVER_PORT=54329, or unset it for Unix-socket only")
                    })?),
                    None => file.server_port,
                };
                ServerChoice::Embedded(migsnap::embedded::Embedded::new(&dir, port))
            }
        };

        let python = args
            .python
            .clone()
            .or_else(|| env::var(env::PYTHON).map(PathBuf::from))
            .or_else(|| file.python.as_deref().map(rel))
            .unwrap_or_else(|| default_python(&project_dir));

        let restore_jobs = match file.restore_jobs {
            None => migsnap::pg::restore::DEFAULT_JOBS,
            Some(n @ 1..=migsnap::pg::restore::MAX_JOBS) => n,
            Some(n) => {
                return Err(
                    Error::usage(format!("restore-jobs = {n} is out of range")).hint(format!(
                        "use 1 (one connection) to {} in {}",
                        migsnap::pg::restore::MAX_JOBS,
                        config_file
                            .as_deref()
                            .map_or("the config".into(), |p| p.display().to_string())
                    )),
                )
            }
        };
        let django_settings = args
            .settings
            .clone()
            .or_else(|| file.settings.clone())
            .or_else(|| env::var(env::DJANGO_SETTINGS_MODULE));

        let pool = match env::var(env::POOL) {
            Some(p) => p
                .parse::<usize>()
                .ok()
                .filter(|n| *n <= MAX_POOL)
                .ok_or_else(|| {
                    Error::usage(format!(
                        "{} must be a number from 0 to {MAX_POOL}, not `{p}`",
                        env::POOL
                    ))
                    .hint("e.g. MIGSNAP_POOL=4 (one per pytest-xdist worker), or 0 for no pool")
                })?,
            None => match file.pool {
                Some(n) if n > MAX_POOL => {
                    return Err(Error::usage(format!("pool = {n} is out of range"))
                        .hint(format!("use 0 (no pool) to {MAX_POOL}")))
                }
                Some(n) => n,
                // What the last pytest run asked for (its worker count).
                None => read_pool_hint(&cache_dir),
            },
        };
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ctx = Ctx {
            django: DjangoRunner {
                python,
                manage_py: rel(file.manage_py.as_deref().unwrap_or(Path::new("manage.py"))),
                settings_module: django_settings.clone(),
                project_dir: project_dir.clone(),
                echo_output: args.verbose,
            },
            key: migsnap::fingerprint::KeySpec {
                root: project_dir,
                migrations: file.migrations.unwrap_or_else(|| owned(DEFAULT_MIGRATIONS)),
                exclude: file.exclude.unwrap_or_default(),
                inputs: file.key_inputs.unwrap_or_else(|| owned(DEFAULT_KEY_INPUTS)),
                salt: file.key_salt.unwrap_or_default(),
                settings_module: django_settings,
            },
            server,
            cache: CacheDir {
                dir: cache_dir,
                secret: cache_secret,
            },
            build: BuildOptions {
                clone_strategy: file.clone_strategy.unwrap_or_default(),
                restore_jobs,
            },
            pool,
        };
        Ok(Settings {
            ctx,
            check_fail_on: file
                .check_fail_on
                .unwrap_or_else(migsnap::check::default_fail_on),
            lint_rules: lint_rules(file.lint_rules.unwrap_or_default())?,
            quiet: args.quiet,
        })
    }
}

/// `lint-rules`, with every id checked: a typo must not leave a rule on.
fn lint_rules(
    rules: std::collections::BTreeMap<String, migsnap::lint::RuleLevel>,
) -> Result<std::collections::BTreeMap<String, migsnap::lint::RuleLevel>> {
    let known: Vec<&str> = migsnap::lint::RULES.iter().map(|(id, ..)| *id).collect();
    if let Some(bad) = rules.keys().find(|id| !known.contains(&id.as_str())) {
        return Err(
            Error::usage(format!("unknown lint rule `{bad}` in lint-rules"))
                .hint(format!("the rules are: {}", known.join(", "))),
        );
    }
    Ok(rules)
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

/// Read migsnap.toml, else `[tool.migsnap]` from pyproject.toml.
fn load_config(project_dir: &Path) -> Result<(FileConfig, Option<PathBuf>)> {
    let own = project_dir.join("migsnap.toml");
    if own.is_file() {
        let text = read_text(&own)?;
        let cfg = toml::from_str::<FileConfig>(&text).map_err(|e| config_error(&own, e))?;
        return Ok((cfg, Some(own)));
    }
    let pyproject = project_dir.join("pyproject.toml");
    if pyproject.is_file() {
        let text = read_text(&pyproject)?;
        let doc: toml::Table = toml::from_str(&text).map_err(|e| config_error(&pyproject, e))?;
        if let Some(section) = doc.get("tool").and_then(|t| t.get("migsnap")) {
            let cfg = section
                .clone()
                .try_into::<FileConfig>()
                .map_err(|e| config_error(&pyproject, e))?;
            return Ok((cfg, Some(pyproject)));
        }
    }
    Ok((FileConfig::default(), None))
}

/// The secret in `cache-secret-file`: it must exist, be readable, be closed
/// to group and others (like an ssh key), and not be empty. Trailing
/// whitespace (the newline of `echo … > file`) is not part of it.
fn read_secret_file(path: &Path) -> Result<migsnap::store::CacheSecret> {
    use std::os::unix::fs::PermissionsExt;
    let hint = |e: Error| {
        e.hint(format!(
            "write a random secret to it with `head -c 32 /dev/urandom | base64 > {0} && chmod 600 {0}`, or set MIGSNAP_CACHE_SECRET",
            path.display()
        ))
    };
    let bytes = std::fs::read(path).map_err(|e| {
        hint(
            Error::usage(format!(
                "cannot read the cache secret file `{}`",
                path.display()
            ))
            .source(e),
        )
    })?;
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0);
    if mode & 0o077 != 0 {
        return Err(Error::usage(format!(
            "the cache secret file `{}` has mode {mode:04o}: group or others have access to it",
            path.display()
        ))
        .hint(format!("`chmod 600 {}`", path.display())));
    }
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    migsnap::store::CacheSecret::new(bytes[..end].to_vec()).ok_or_else(|| {
        hint(Error::usage(format!(
            "the cache secret file `{}` is empty",
            path.display()
        )))
    })
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .with_kind(Kind::Usage, || format!("cannot read `{}`", path.display()))
}

fn config_error(path: &Path, e: toml::de::Error) -> Error {
    // toml's message spans several lines (it quotes the source); keep the gist
    // on the first line and the excerpt as detail.
    let text = e.message().to_string();
    let section = if path.ends_with("pyproject.toml") {
        " in [tool.migsnap]"
    } else {
        ""
    };
    Error::usage(format!(
        "invalid config `{}`{section}: {text}",
        path.display()
    ))
    .hint("see the README's configuration reference for the accepted keys")
}

/// An explicitly configured cache dir may be created, but not its parents: a
/// typo in the path should not grow a directory tree somewhere unexpected.
fn explicit_cache_dir(dir: &Path) -> Result<PathBuf> {
    if !dir.is_dir() {
        let parent_ok = dir.parent().is_some_and(|p| p.is_dir());
        if !parent_ok {
            return Err(Error::usage(format!(
                "cache directory `{}` does not exist and neither does its parent",
                dir.display()
            ))
            .hint(format!(
                "create it first (`mkdir -p {}`) or fix the path",
                dir.display()
            )));
        }
    }
    Ok(dir.to_path_buf())
}

fn default_cache_dir() -> Result<PathBuf> {
    directories::ProjectDirs::from("", "", "migsnap")
        .map(|d| d.cache_dir().to_path_buf())
        .ok_or_else(|| {
            Error::usage("cannot find a cache directory for this user (no home directory)")
                .hint("set MIGSNAP_CACHE_DIR or pass --cache-dir")
        })
}

/// MIGSNAP_PYTHON and config are handled by the caller; then an active
/// virtualenv, the project's `.venv`, and finally `python3` on PATH.
fn default_python(project_dir: &Path) -> PathBuf {
    if let Some(venv) = env::var(env::VIRTUAL_ENV) {
        let p = Path::new(&venv).join("bin/python");
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
