//! The settings' DATABASES as Django's test setup sees them, and which
//! databases that makes (`prepare --all-aliases`): Django's own grouping
//! (`django.test.utils.get_unique_databases_and_mirrors`), without its
//! one-by-one creation order, since every database comes from a snapshot
//! of its own.

use serde::{Deserialize, Serialize};

/// One alias, as the shim reads it from the settings (shim.py,
/// `list_aliases`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct AliasInfo {
    pub alias: String,
    /// Django's backend vendor: `postgresql`, `sqlite`…
    pub vendor: String,
    /// `TEST["MIRROR"]`: the alias whose database this one uses in tests.
    pub mirror: Option<String>,
    /// The test database Django would create (`TEST["NAME"]` or
    /// `test_<NAME>`); `None` on another backend.
    pub test_name: Option<String>,
    /// `test_db_signature()`: aliases with the same one are one database.
    pub signature: Vec<String>,
}

/// One test database to prepare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Database {
    /// The alias it is migrated for: `default` when it is among those
    /// sharing it (Django migrates the first, and data migrations use it).
    pub alias: String,
    pub name: String,
    /// The other aliases that are the same database.
    pub shares: Vec<String>,
}

/// What the settings' aliases need.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Layout {
    pub databases: Vec<Database>,
    /// alias -> the alias whose database it uses (`TEST["MIRROR"]`).
    pub mirrors: Vec<(String, String)>,
    /// Aliases on another backend, with it: migsnap cannot prepare them.
    pub others: Vec<(String, String)>,
}

impl Layout {
    /// Django's grouping, in settings order.
    pub fn of(aliases: &[AliasInfo]) -> Layout {
        let mut out = Layout::default();
        let mut groups: Vec<(&[String], Vec<&AliasInfo>)> = Vec::new();
        for a in aliases {
            if let Some(target) = &a.mirror {
                out.mirrors.push((a.alias.clone(), target.clone()));
                continue;
            }
            if a.vendor != "postgresql" || a.test_name.is_none() {
                out.others.push((a.alias.clone(), a.vendor.clone()));
                continue;
            }
            match groups
                .iter_mut()
                .find(|(sig, _)| *sig == a.signature.as_slice())
            {
                Some((_, members)) if a.alias == crate::fingerprint::DEFAULT_ALIAS => {
                    members.insert(0, a)
                }
                Some((_, members)) => members.push(a),
                None => groups.push((&a.signature, vec![a])),
            }
        }
        out.databases = groups
            .into_iter()
            .map(|(_, members)| Database {
                alias: members[0].alias.clone(),
                name: members[0].test_name.clone().unwrap_or_default(),
                shares: members[1..].iter().map(|m| m.alias.clone()).collect(),
            })
            .collect();
        out
    }

    /// Two different databases of the settings with one test name (on
    /// two servers, or one server spelled two ways): Django creates each
    /// where its alias says, but migsnap makes every test database on its
    /// own server, so both would be prepared into one database at once and
    /// the survivor's schema serve both aliases.
    pub fn clash(&self) -> Option<(&Database, &Database)> {
        self.databases.iter().enumerate().find_map(|(i, a)| {
            self.databases[i + 1..]
                .iter()
                .find(|b| b.name == a.name)
                .map(|b| (a, b))
        })
    }

    /// A `TEST["MIRROR"]` naming an alias the settings do not have:
    /// (the mirror, what it names).
    pub fn dangling_mirror(&self, aliases: &[AliasInfo]) -> Option<(&str, &str)> {
        self.mirrors
            .iter()
            .find(|(_, target)| !aliases.iter().any(|a| &a.alias == target))
            .map(|(a, t)| (a.as_str(), t.as_str()))
    }

    /// The database `alias` uses: its own, the one it shares, or its
    /// mirror's; with the alias it was prepared for.
    pub fn database_of(&self, alias: &str) -> Option<&Database> {
        let alias = self
            .mirrors
            .iter()
            .find(|(a, _)| a == alias)
            .map_or(alias, |(_, target)| target.as_str());
        self.databases
            .iter()
            .find(|d| d.alias == alias || d.shares.iter().any(|s| s == alias))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(alias: &str, vendor: &str, mirror: Option<&str>, name: &str) -> AliasInfo {
        AliasInfo {
            alias: alias.into(),
            vendor: vendor.into(),
            mirror: mirror.map(Into::into),
            test_name: (vendor == "postgresql").then(|| name.to_string()),
            signature: vec!["h".into(), "5432".into(), vendor.into(), name.into()],
        }
    }

    #[test]
    fn one_database_per_signature_default_first_mirrors_and_other_backends_apart() {
        let layout = Layout::of(&[
            info("reader", "postgresql", None, "test_app"),
            info("default", "postgresql", None, "test_app"),
            info("warehouse", "postgresql", None, "test_app_wh"),
            info("replica", "postgresql", Some("default"), "test_app"),
            info("cache", "sqlite", None, ":memory:"),
        ]);
        assert_eq!(
            layout.databases,
            vec![
                Database {
                    alias: "default".into(),
                    name: "test_app".into(),
                    shares: vec!["reader".into()],
                },
                Database {
                    alias: "warehouse".into(),
                    name: "test_app_wh".into(),
                    shares: vec![],
                },
            ]
        );
        assert_eq!(
            layout.mirrors,
            vec![("replica".to_string(), "default".to_string())]
        );
        assert_eq!(
            layout.others,
            vec![("cache".to_string(), "sqlite".to_string())]
        );
        for (alias, db) in [
            ("replica", "test_app"),
            ("reader", "test_app"),
            ("warehouse", "test_app_wh"),
        ] {
            assert_eq!(layout.database_of(alias).map(|d| d.name.as_str()), Some(db));
        }
        assert_eq!(layout.database_of("cache"), None);
        assert_eq!(layout.clash(), None);
    }

    #[test]
    fn one_test_name_for_two_databases_and_a_mirror_of_nothing_are_found() {
        let mut other = info("other", "postgresql", None, "test_app");
        other.signature[0] = "h/".into(); // the same server, spelled otherwise
        let found = [
            info("default", "postgresql", None, "test_app"),
            other,
            info("replica", "postgresql", Some("nope"), "test_app"),
        ];
        let layout = Layout::of(&found);
        let (a, b) = layout.clash().expect("a clash");
        assert_eq!((a.alias.as_str(), b.alias.as_str()), ("default", "other"));
        assert_eq!(layout.dangling_mirror(&found), Some(("replica", "nope")));
    }
}
