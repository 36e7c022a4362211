//! Every database name shape migsnap creates, parsed and displayed here.
//!
//! Naming is the ownership rule: migsnap drops only databases whose names
//! it made (plus a target the user named, see `pg::admin::target_check`),
//! so prepare, check, gc and ls must all agree on the shapes. Each carries
//! 16 hex digits: of the key for templates, builds and `check`'s scratch
//! databases; of the target's name for the scratch clone `prepare` renames
//! into place. Those 16 hex are also the advisory lock id a live migsnap
//! holds while it uses the database, which is how gc tells a leftover from
//! a database in use.

use crate::key::{is_hex16, Key, LockId};
use std::fmt;

pub const PREFIX: &str = "migsnap_";

/// A database migsnap made, by the shape of its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DbName {
    /// `migsnap_<16 hex>`: the template for the key starting with that hex.
    Template(String),
    /// `migsnap_build_<16 hex>`: a snapshot being built (or left by a crash).
    Build(String),
    /// `migsnap_clone_<16 hex of the target name>`: `prepare`'s clone before
    /// it is renamed to the target.
    Clone(String),
    /// `migsnap_check_<16 hex>`: `check`'s copy of the migrated template.
    Check(String),
    /// `migsnap_state_<16 hex>`: `check`'s database built from model state.
    State(String),
    /// `migsnap_trash_<16 random hex>`: a target `prepare` replaced, renamed
    /// aside in the same transaction that put its replacement in place, and
    /// dropped afterwards, off the critical path (`maintain`, `gc`).
    Trash(String),
    /// `migsnap_pool_<16 random hex>`: a ready clone of a template, waiting
    /// to be handed out by rename (its comment names the key and inputs).
    Pool(String),
    /// `migsnap_plan_<16 random hex>`: a throwaway clone of a snapshot
    /// (`plan`, `sql`, `schema`, `diff` read it; `trace` applies migrations
    /// to it: `Admin::with_scratch`), dropped when they finish.
    Plan(String),
}

type Make = fn(String) -> DbName;

/// (kind prefix after `migsnap_`, constructor): the shapes with a kind word.
const KINDS: [(&str, Make); 7] = [
    ("build_", DbName::Build),
    ("clone_", DbName::Clone),
    ("check_", DbName::Check),
    ("state_", DbName::State),
    ("trash_", DbName::Trash),
    ("pool_", DbName::Pool),
    ("plan_", DbName::Plan),
];

impl DbName {
    pub fn template(key: &Key) -> DbName {
        DbName::Template(key.short().to_string())
    }
    pub fn build(key: &Key) -> DbName {
        DbName::Build(key.short().to_string())
    }
    /// Derived from the target's name, so a run killed half-way leaves a
    /// database the next `prepare` of the same target finds and removes.
    pub fn clone_for(target: &str) -> DbName {
        let tag = crate::hash::hash_normalized(target.as_bytes());
        DbName::Clone(tag[..16].to_string())
    }
    pub fn check(key: &Key) -> DbName {
        DbName::Check(key.short().to_string())
    }
    pub fn state(key: &Key) -> DbName {
        DbName::State(key.short().to_string())
    }
    /// A fresh trash name: random, so two replaced targets never collide.
    pub fn trash() -> crate::error::Result<DbName> {
        Ok(DbName::Trash(crate::hash::random_hex(8)?))
    }
    /// A fresh pool member name.
    pub fn pool() -> crate::error::Result<DbName> {
        Ok(DbName::Pool(crate::hash::random_hex(8)?))
    }
    /// A fresh name for `plan`'s scratch clone.
    pub fn plan() -> crate::error::Result<DbName> {
        Ok(DbName::Plan(crate::hash::random_hex(8)?))
    }

    /// Which shape `name` has; None for anything migsnap did not name.
    pub fn parse(name: &str) -> Option<DbName> {
        let rest = name.strip_prefix(PREFIX)?;
        if is_hex16(rest) {
            return Some(DbName::Template(rest.to_string()));
        }
        KINDS.iter().find_map(|(kind, make)| {
            let hex = rest.strip_prefix(kind)?;
            is_hex16(hex).then(|| make(hex.to_string()))
        })
    }

    /// The 16 hex in the name: also the advisory lock id of its user.
    pub fn hex(&self) -> &str {
        match self {
            DbName::Template(h)
            | DbName::Build(h)
            | DbName::Clone(h)
            | DbName::Check(h)
            | DbName::State(h)
            | DbName::Trash(h)
            | DbName::Pool(h)
            | DbName::Plan(h) => h,
        }
    }

    /// The advisory lock a live migsnap holds while it uses this database.
    pub fn lock_id(&self) -> LockId {
        LockId::from_hex16(self.hex())
    }

    fn kind(&self) -> &'static str {
        match self {
            DbName::Template(_) => "",
            DbName::Build(_) => "build_",
            DbName::Clone(_) => "clone_",
            DbName::Check(_) => "check_",
            DbName::State(_) => "state_",
            DbName::Trash(_) => "trash_",
            DbName::Pool(_) => "pool_",
            DbName::Plan(_) => "plan_",
        }
    }
}

impl fmt::Display for DbName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}{}", self.kind(), self.hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_shape_parses_back() {
        let key = Key::parse(&"0123456789abcdef".repeat(4)).expect("key");
        let all = [
            DbName::template(&key),
            DbName::build(&key),
            DbName::clone_for("test_app"),
            DbName::check(&key),
            DbName::state(&key),
            DbName::trash().expect("random"),
            DbName::pool().expect("random"),
            DbName::plan().expect("random"),
        ];
        let shown: Vec<String> = all.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            shown[..2],
            ["migsnap_0123456789abcdef", "migsnap_build_0123456789abcdef"]
        );
        assert!(shown[2].starts_with("migsnap_clone_") && shown[2].len() == 30);
        assert_eq!(shown[3], "migsnap_check_0123456789abcdef");
        assert_eq!(shown[4], "migsnap_state_0123456789abcdef");
        assert!(shown[5].starts_with("migsnap_trash_") && shown[5].len() == 30);
        assert!(shown[6].starts_with("migsnap_pool_") && shown[6].len() == 29);
        assert!(shown[7].starts_with("migsnap_plan_") && shown[7].len() == 29);
        for (name, text) in all.iter().zip(&shown) {
            assert_eq!(DbName::parse(text).as_ref(), Some(name));
        }
        for foreign in [
            "migsnap_other",
            "test_app",
            "migsnap_build_0123",
            "migsnap_0123456789abcdefa",
            "migsnap_fork_0123456789abcdef",
        ] {
            assert_eq!(DbName::parse(foreign), None, "{foreign}");
        }
    }

    proptest! {
        #[test]
        fn parse_and_display_round_trip(name in "migsnap_((build|clone|check|state|trash|pool|plan|x)_)?[0-9a-f]{14,17}") {
            if let Some(parsed) = DbName::parse(&name) {
                prop_assert_eq!(parsed.to_string(), name);
            }
        }
    }
}
