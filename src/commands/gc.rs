//! `migsnap gc`: bound the cache dir and the server's templates, and sweep
//! what interrupted runs left behind.
//!
//! Never removes what a concurrent `prepare` needs: a snapshot goes only
//! after gc got its per-key cache lock (non-blocking; a locked key is
//! skipped), its template only under the per-key advisory lock, a build
//! or scratch database (every shape in `migsnap::names`) only when the
//! advisory lock its user holds is free. The snapshot for the current
//! migration files is always kept. Templates whose key this cache dir does
//! not know are left alone: on a shared server they may belong to another
//! project or another cache dir.

use crate::cli::GcArgs;
use crate::settings::Settings;
use migsnap::error::{exit, Result};
use migsnap::key::{Key, LockId, SHORT_LEN};
use migsnap::names::DbName;
use migsnap::pg::admin::{self, Admin, DbInfo, TEMPLATE_PREFIX};
use migsnap::report::Events;
use migsnap::store::{Manifest, Store};
use migsnap::units;
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

/// A temp file untouched for this long belongs to a dead process (writers
/// hold the key's lock too, which gc checks as well).
const STALE_TEMP: Duration = Duration::from_secs(10 * 60);

#[derive(serde::Serialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Snapshot,
    Template,
    BuildDatabase,
    ScratchDatabase,
    ReplacedDatabase,
    PoolMember,
    RestoreRole,
    TempFile,
    OrphanDump,
    CheckCache,
    /// A signature no manifest names: in the snapshot store, or in the
    /// cache dir (a crash between the signature and its manifest).
    OrphanSignature,
}

impl Kind {
    fn label(&self) -> &'static str {
        match self {
            Kind::Snapshot => "snapshot",
            Kind::Template => "template",
            Kind::BuildDatabase => "build database",
            Kind::ScratchDatabase => "scratch database",
            Kind::ReplacedDatabase => "replaced database",
            Kind::PoolMember => "pool member",
            Kind::RestoreRole => "restore role",
            Kind::TempFile => "temp file",
            Kind::OrphanDump => "dump without manifest",
            Kind::CheckCache => "check cache without snapshot",
            Kind::OrphanSignature => "signature without manifest",
        }
    }
}

#[derive(serde::Serialize)]
struct Item {
    kind: Kind,
    /// Key for snapshots, database name, or file path.
    name: String,
    size: Option<u64>,
}

#[derive(serde::Serialize)]
struct Skipped {
    #[serde(flatten)]
    item: Item,
    reason: &'static str,
}

#[derive(serde::Serialize)]
struct GcOutput {
    dry_run: bool,
    current_key: Key,
    /// The current key of every alias this project has snapshots for
    /// (`current_key` among them): each is kept whatever `--keep` says.
    current_keys: BTreeSet<Key>,
    /// Keys of the snapshots left in the cache, newest first.
    kept: Vec<Key>,
    removed: Vec<Item>,
    skipped: Vec<Skipped>,
    freed_bytes: u64,
    /// Snapshots of other projects (or of no recorded project) in the
    /// cache dir, left alone without `--all-projects`.
    other_projects: usize,
}

impl GcOutput {
    /// Nothing removed yet; `keep` is what `select` kept, `other_projects`
    /// how many snapshots it left alone as other projects'.
    fn new(
        dry_run: bool,
        current: (&Key, &BTreeSet<Key>),
        keep: &[Manifest],
        other_projects: usize,
    ) -> GcOutput {
        GcOutput {
            dry_run,
            current_key: current.0.clone(),
            current_keys: current.1.clone(),
            kept: keep.iter().map(|m| m.key.clone()).collect(),
            removed: Vec::new(),
            skipped: Vec::new(),
            freed_bytes: 0,
            other_projects,
        }
    }
}

const IN_USE: &str = "in use by another migsnap";

pub async fn run(settings: &Settings, args: &GcArgs, ui: &Events) -> Result<u8> {
    if args.remote {
        return run_remote(settings, args, ui).await;
    }
    let session = settings.session();
    let fp = session.fingerprint().await?;
    let store = session.store()?;
    let admin = session.admin(ui).await?;
    let current = fp.current_keys(
        &settings.ctx.key,
        store.aliases().iter().map(String::as_str),
    );
    // With the `prepare --at` snapshots made from the same files.
    let current = migsnap::listing::with_at_snapshots(&current, &store.manifests());
    let (ours, other_projects) =
        store.project_manifests(settings.ctx.project_dir(), &current, args.all_projects);
    let (keep, remove) = migsnap::listing::select(ours, &current, args.keep, args.max_size);
    let mut gc = Gc {
        admin,
        store: &store,
        ui,
        dry_run: args.dry_run,
        pool: settings.ctx.pool,
        out: GcOutput::new(
            args.dry_run,
            (&fp.key, &current),
            &keep,
            other_projects.len(),
        ),
    };
    for m in remove {
        gc.remove_snapshot(&m).await?;
    }
    gc.sweep_builds().await?;
    gc.sweep_restore_roles().await?;
    gc.sweep_files()?;

    if args.json {
        super::print_json(&gc.out)?;
    } else {
        super::print_stdout(&render(&gc.out));
    }
    Ok(exit::OK)
}

/// `gc --remote`: the same retention on the snapshot store (the current
/// key's is kept, then the newest `--keep`, within `--max-size`), each
/// snapshot removed manifest first, then what interrupted or losing pushes
/// left (dumps and signatures no manifest names, once an hour old). A
/// manifest that fails its checks (signed with another secret, damaged) is
/// left alone and reported: it may be someone else's.
async fn run_remote(settings: &Settings, args: &GcArgs, ui: &Events) -> Result<u8> {
    use migsnap::remote::{Listing, ObjectKind};
    let session = settings.session();
    let fp = session.fingerprint().await?;
    let remote = migsnap::shared::configured(&settings.ctx)?;
    let cache = remote.manifest_cache(settings.ctx.store()?.dir())?;
    let found = remote.manifests(&cache).await?;
    let listing = remote.list().await?;
    // Names that are not migsnap's are left alone: the prefix may be
    // misconfigured to hold someone else's objects, and a name that no path
    // can be is not one to hand to a delete.
    if let Some(w) = listing.odd_names(remote.url()) {
        ui.warn(format!("{w} (gc leaves them)"));
    }
    let aliases: BTreeSet<&str> = found.manifests.iter().map(|m| m.alias.as_str()).collect();
    let current = fp.current_keys(&settings.ctx.key, aliases);
    let (keep, remove) =
        migsnap::listing::select(found.manifests, &current, args.keep, args.max_size);
    // The prefix names the project: builders' project dirs differ from
    // machine to machine, so every snapshot under it counts as this one's.
    let mut out = GcOutput::new(args.dry_run, (&fp.key, &current), &keep, 0);
    for m in &remove {
        if !args.dry_run {
            remote.remove(&m.key, &listing).await?;
            cache.discard(&m.key);
        }
        out.freed_bytes += m.dump.size;
        out.removed.push(Item {
            kind: Kind::Snapshot,
            name: m.key.to_string(),
            size: Some(m.dump.size),
        });
    }
    for (key, _) in found.refused {
        out.skipped.push(Skipped {
            item: Item {
                kind: Kind::Snapshot,
                name: key.to_string(),
                size: None,
            },
            reason: "its manifest fails the checks (damaged, or signed with another secret)",
        });
    }
    let rest = Listing {
        odd: Vec::new(),
        objects: listing
            .objects
            .into_iter()
            .filter(|o| !remove.iter().any(|m| m.key == o.key))
            .collect(),
    };
    for o in remote.orphans(&rest, migsnap::store::now_unix()).await? {
        if !args.dry_run {
            remote.remove_object(&o).await?;
        }
        out.freed_bytes += o.size;
        out.removed.push(Item {
            kind: match o.kind {
                ObjectKind::Signature { .. } => Kind::OrphanSignature,
                _ => Kind::OrphanDump,
            },
            name: o.name,
            size: Some(o.size),
        });
    }
    if args.json {
        super::print_json(&out)?;
    } else {
        super::print_stdout(&render(&out));
    }
    Ok(exit::OK)
}

/// One gc pass: what it works on, and what it has done so far.
struct Gc<'a> {
    admin: &'a Admin,
    store: &'a Store,
    ui: &'a Events,
    dry_run: bool,
    /// The pool size in force: with none, every pool member goes.
    pool: usize,
    out: GcOutput,
}

impl Gc<'_> {
    fn skip(&mut self, item: Item, reason: &'static str) {
        self.out.skipped.push(Skipped { item, reason });
    }

    async fn remove_snapshot(&mut self, m: &Manifest) -> Result<()> {
        let item = Item {
            kind: Kind::Snapshot,
            name: m.key.to_string(),
            size: Some(m.dump.size),
        };
        // Held until the snapshot and its template are gone: no prepare can
        // start building or restoring this key meanwhile. Then its lock
        // file goes too (see `Store::try_lock` for why that is safe).
        let Some(lock) = self.store.try_lock(&m.key)? else {
            self.skip(item, IN_USE);
            return Ok(());
        };
        self.remove_locked_snapshot(m, item).await?;
        if !self.dry_run {
            self.store.remove_lock(&m.key, &lock);
        }
        Ok(())
    }

    /// `remove_snapshot`'s work, under the key's cache lock.
    async fn remove_locked_snapshot(&mut self, m: &Manifest, item: Item) -> Result<()> {
        if !self.dry_run {
            self.store.remove(&m.key)?;
        }
        self.out.freed_bytes += m.dump.size;
        self.out.removed.push(item);

        let template = admin::template_name(&m.key);
        let Some(info) = self.admin.database(&template).await? else {
            return Ok(());
        };
        if info.template_key().as_ref() != Some(&m.key) {
            // Same 16-hex prefix, another key (or unfinished): not ours.
            return Ok(());
        }
        let item = Item {
            kind: Kind::Template,
            name: template,
            size: None,
        };
        self.drop_unlocked(&info, m.key.lock_id(), item, IN_USE)
            .await
    }

    /// Build and scratch databases whose lock is free were left by a
    /// killed run. A build holds its key's lock, `check` holds it around
    /// its check and state databases, and `prepare` holds the lock named by
    /// its clone's hex from before creating the clone until the rename;
    /// `plan` holds its clone's own hex.
    async fn sweep_builds(&mut self) -> Result<()> {
        for info in self.admin.databases_like(TEMPLATE_PREFIX).await? {
            let Some(name) = DbName::parse(&info.name) else {
                continue;
            };
            let (kind, busy) = match name {
                DbName::Template(_) => continue,
                DbName::Build(_) => (Kind::BuildDatabase, "being built"),
                DbName::Clone(_) | DbName::Check(_) | DbName::State(_) | DbName::Plan(_) => {
                    (Kind::ScratchDatabase, IN_USE)
                }
                // A target `prepare` set aside: nobody may use it any more.
                DbName::Trash(_) => (Kind::ReplacedDatabase, IN_USE),
                // The current key's pool stays while there is to be one
                // (`maintain` sizes it); an orphaned member goes; other
                // keys' pools are their projects' to keep.
                DbName::Pool(_) => {
                    let current = migsnap::pool::member_key(&info)
                        .is_some_and(|k| self.out.current_keys.contains(&k));
                    let stale = if current {
                        self.pool == 0
                    } else {
                        migsnap::pool::orphaned(self.admin, &info).await?
                    };
                    if !stale {
                        continue;
                    }
                    (Kind::PoolMember, "being made")
                }
            };
            let item = Item {
                kind,
                name: info.name.clone(),
                size: None,
            };
            self.drop_unlocked(&info, name.lock_id(), item, busy)
                .await?;
        }
        Ok(())
    }

    /// Restore roles a killed restore left (`migsnap_restore_<hex>`): a live
    /// restore holds its key's build lock, so a role whose lock is free is
    /// a leftover. Its build database went first (above); a role that still
    /// owns something is reported as skipped.
    async fn sweep_restore_roles(&mut self) -> Result<()> {
        for (role, lock) in self.admin.restore_roles().await? {
            let item = Item {
                kind: Kind::RestoreRole,
                name: role.clone(),
                size: None,
            };
            let admin = self.admin;
            self.drop_if_free(lock, item, "restoring", async || {
                admin.drop_role(&role).await
            })
            .await?;
        }
        Ok(())
    }

    /// Drop a migsnap database if the lock `lock` is free: see `drop_if_free`.
    async fn drop_unlocked(
        &mut self,
        info: &DbInfo,
        lock: LockId,
        item: Item,
        busy: &'static str,
    ) -> Result<()> {
        let admin = self.admin;
        self.drop_if_free(lock, item, busy, async || admin.drop(info).await)
            .await
    }

    /// Run `drop` (not in a dry run) if the lock `lock` is free, holding it
    /// meanwhile (whoever makes or uses the thing holds it while it works).
    /// A held lock or a failed drop (a session still connected, say) is
    /// reported as skipped: one busy database or role must not stop the
    /// sweep.
    async fn drop_if_free(
        &mut self,
        lock: LockId,
        item: Item,
        busy: &'static str,
        drop: impl AsyncFnOnce() -> Result<()>,
    ) -> Result<()> {
        let dry_run = self.dry_run;
        let work = async || if dry_run { Ok(()) } else { drop().await };
        match self.admin.if_free(lock, work).await? {
            None => self.skip(item, busy),
            Some(Ok(())) => self.out.removed.push(item),
            Some(Err(e)) => {
                self.ui.warn(e.message);
                self.skip(item, "drop failed");
            }
        }
        Ok(())
    }

    /// Temp files of dead writers, and dumps whose manifest never got written.
    fn sweep_files(&mut self) -> Result<()> {
        let now = SystemTime::now();
        let stale = self.store.temp_files(None).into_iter().filter(|(path, _)| {
            std::fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age >= STALE_TEMP)
        });
        let orphans = self
            .store
            .orphan_dumps()
            .into_iter()
            .map(|key| (self.store.dump_path(&key), key));
        // `check`'s catalogs are only used with their snapshot's manifest.
        let current = self.out.current_keys.clone();
        let unchecked = self
            .store
            .checked_keys()
            .into_iter()
            .filter(|key| !current.contains(key) && !self.store.manifest_path(key).exists())
            .map(|key| (self.store.check_path(&key), key));
        let unsigned = self
            .store
            .signed_keys()
            .into_iter()
            .filter(|key| !self.store.manifest_path(key).exists())
            .map(|key| (self.store.sig_path(&key), key));
        let files: Vec<_> = stale
            .map(|f| (Kind::TempFile, f))
            .chain(orphans.map(|f| (Kind::OrphanDump, f)))
            .chain(unchecked.map(|f| (Kind::CheckCache, f)))
            .chain(unsigned.map(|f| (Kind::OrphanSignature, f)))
            .collect();
        for (kind, (path, key)) in files {
            let size = std::fs::metadata(&path).map(|m| m.len()).ok();
            let item = Item {
                kind,
                name: path.display().to_string(),
                size,
            };
            // Writers hold the key's lock: a locked key's files are live.
            let Some(_lock) = self.store.try_lock(&key)? else {
                self.skip(item, IN_USE);
                continue;
            };
            if !self.dry_run {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(migsnap::store::cache_write_error(self.store.dir(), e)),
                }
            }
            self.out.freed_bytes += size.unwrap_or(0);
            self.out.removed.push(item);
        }
        self.sweep_locks()
    }

    /// Empty `<key>.lock` files of keys with nothing left in the cache
    /// (left by earlier versions of gc, or by a failed build). Not reported: they
    /// hold no data. Removed only while held, like `remove_snapshot` does.
    fn sweep_locks(&mut self) -> Result<()> {
        if self.dry_run {
            return Ok(());
        }
        let unused = |store: &Store, key: &Key| {
            !store.manifest_path(key).exists()
                && !store.dump_path(key).exists()
                && !store.check_path(key).exists()
                && !store.sig_path(key).exists()
                && store.temp_files(Some(key)).is_empty()
        };
        for key in self.store.locked_keys() {
            if !unused(self.store, &key) {
                continue;
            }
            if let Some(lock) = self.store.try_lock(&key)? {
                // Checked again under the lock: a build may have begun.
                if unused(self.store, &key) {
                    self.store.remove_lock(&key, &lock);
                }
            }
        }
        Ok(())
    }
}

fn render(out: &GcOutput) -> String {
    let verb = if out.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let mut text = String::new();
    for i in &out.removed {
        let name = match i.kind {
            Kind::Snapshot => i.name.get(..SHORT_LEN).unwrap_or(&i.name).to_string(),
            _ => i.name.clone(),
        };
        let size = i
            .size
            .map(|s| format!(" ({})", units::size(s)))
            .unwrap_or_default();
        text.push_str(&format!("{verb} {} {name}{size}\n", i.kind.label()));
    }
    for s in &out.skipped {
        text.push_str(&format!(
            "skipped {} {}: {}\n",
            s.item.kind.label(),
            s.item.name,
            s.reason
        ));
    }
    text.push_str(&format!(
        "{} {}; kept {} snapshot(s)\n",
        if out.dry_run { "would free" } else { "freed" },
        units::size(out.freed_bytes),
        out.kept.len()
    ));
    if out.other_projects > 0 {
        text.push_str(&format!(
            "left {} snapshot(s) of other projects alone (--all-projects includes them)\n",
            out.other_projects
        ));
    }
    text
}
