//! `migsnap prepare`: put a fully migrated database under the given name.
//!
//! Warm path: one hash of the files, one query, one CREATE DATABASE …
//! TEMPLATE (plus a DROP when the name exists). Nothing else, and no Python.

use crate::cli::PrepareArgs;
use crate::engine::{self, Snapshot, Source};
use crate::error::{exit, Result};
use crate::fingerprint;
use crate::pg::admin::{self, CLONE_COMMENT};
use crate::settings::Settings;
use crate::ui::{self, Ui};
use std::time::Instant;

#[derive(serde::Serialize)]
struct PrepareOutput<'a> {
    database: &'a str,
    key: &'a str,
    source: Source,
    base_key: Option<&'a str>,
    applied: Vec<&'a str>,
    elapsed_ms: u64,
    host: &'a str,
    port: u16,
    user: &'a str,
    password: Option<&'a str>,
    dbname: &'a str,
    url: String,
}

pub async fn run(settings: &Settings, args: &PrepareArgs, ui: &Ui) -> Result<u8> {
    let started = Instant::now();
    let target = args.database.as_str();
    admin::validate_name(target)?;
    let fp = fingerprint::compute(settings)?;
    let admin = engine::connect(settings, ui).await?;
    let template = admin::template_name(&fp.key);

    let found = admin.databases(&[&template, target]).await?;
    let existing = found.iter().find(|d| d.name == target);
    admin::target_check(target, existing, &admin.conn.admin_db, args.force)?;
    let ready = found
        .iter()
        .any(|d| d.name == template && d.is_template_for(&fp.key));

    let snapshot = if ready && !args.rebuild {
        Snapshot {
            template,
            source: Source::Template,
            base_key: None,
            applied: vec![],
        }
    } else {
        engine::build(&admin, settings, &fp, ui, args.rebuild).await?
    };

    // The target may have appeared while we built; look again before dropping.
    let existing = if snapshot.source == Source::Template && ready {
        existing.cloned()
    } else {
        admin.database(target).await?
    };
    if let Some(info) = &existing {
        admin::target_check(target, Some(info), &admin.conn.admin_db, args.force)?;
        admin.drop(info).await?;
    }
    admin
        .create(
            target,
            Some(&snapshot.template),
            settings.effective_clone_strategy(),
        )
        .await?;
    admin
        .comment(target, &format!("{CLONE_COMMENT}{}", fp.short()))
        .await?;

    let elapsed = started.elapsed();
    let conn = &admin.conn;
    if args.json {
        super::print_json(&PrepareOutput {
            database: target,
            key: &fp.key,
            source: snapshot.source,
            base_key: snapshot.base_key.as_deref(),
            applied: snapshot.applied.iter().map(|a| a.name.as_str()).collect(),
            elapsed_ms: elapsed.as_millis() as u64,
            host: &conn.host,
            port: conn.port,
            user: &conn.user,
            password: conn.password.as_deref(),
            dbname: target,
            url: conn.url(target),
        })?;
    } else {
        let applied = match snapshot.applied.len() {
            0 => String::new(),
            n => format!(", {n} migration(s) applied"),
        };
        super::print_stdout(&format!(
            "{target} ready from {}{applied} in {}\n{}\n",
            snapshot.source.as_str(),
            ui::duration(elapsed),
            conn.url(target)
        ));
    }
    Ok(exit::OK)
}
