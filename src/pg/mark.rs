//! The comments migsnap writes on the databases it makes, and reads back to
//! tell them apart: one codec, so the format is written in one place.
//!
//! A database's comment is migsnap's claim on it: a template it built, a
//! clone it handed out, a pool member it keeps ready. Databases made by
//! earlier versions carry these very formats, so they are kept byte for
//! byte, and `parse` accepts exactly what `encode` writes (nothing looser:
//! a comment `parse` accepts is its own `encode`, checked by a property
//! test), so a comment someone typed by hand is not mistaken for a mark.

use crate::key::Key;

/// Every mark starts with this; `by_migsnap` keeps counting marks of older
/// formats (a v1 template) as migsnap's, to be rebuilt rather than refused.
const MIGSNAP: &str = "migsnap ";
/// v2: the template's mark also names the digest of the inputs it was built
/// from (`depends`); v1 templates match no key and are rebuilt.
const TEMPLATE: &str = "migsnap template v2 key=";
const CLONE: &str = "migsnap clone of ";
const POOL: &str = "migsnap pool key=";
const INPUTS: &str = "inputs=";
/// Ends the mark of a template restored from a foreign snapshot (kept under
/// `trust-unsigned`, issue #21): it serves its own key, but is never the
/// start of an incremental build.
const FOREIGN: &str = "foreign";

/// What a database is to migsnap, as its comment says.
///
/// The string fields have the shapes migsnap writes: `inputs` is a sha256
/// in lowercase hex (`Checked::digest`), `short` and `project` 16 lowercase
/// hex (`Key::short`, `Ctx::project_tag`). `parse` checks them; `encode`
/// trusts its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mark {
    /// `migsnap_<short key>`: the finished template for `key`, built from
    /// `inputs`; `foreign`: restored from a snapshot no trusted key signed.
    Template {
        key: Key,
        inputs: String,
        foreign: bool,
    },
    /// A database `prepare` made (cloned, restored, or taken from the pool)
    /// under a name the user chose; `short` is its key's short form.
    Clone { short: String },
    /// `migsnap_pool_*`: a clone kept ready for `key`'s template (the one
    /// with oid `template`, built from `inputs`), by the project `project`.
    Pool {
        key: Key,
        inputs: String,
        template: u32,
        project: String,
    },
}

impl Mark {
    /// The comment to put on the database.
    pub fn encode(&self) -> String {
        match self {
            Mark::Template {
                key,
                inputs,
                foreign,
            } => {
                let foreign = if *foreign { " foreign" } else { "" };
                format!("{TEMPLATE}{key} {INPUTS}{inputs}{foreign}")
            }
            Mark::Clone { short } => format!("{CLONE}{short}"),
            Mark::Pool {
                key,
                inputs,
                template,
                project,
            } => format!("{POOL}{key} {INPUTS}{inputs} template={template} project={project}"),
        }
    }

    /// The mark `comment` is, if it is exactly one migsnap writes.
    pub fn parse(comment: &str) -> Option<Mark> {
        if let Some(rest) = comment.strip_prefix(TEMPLATE) {
            let mut words = rest.split(' ');
            let key = Key::parse(words.next()?).ok()?;
            let inputs = digest(words.next()?.strip_prefix(INPUTS)?)?;
            let foreign = match words.next() {
                None => false,
                Some(FOREIGN) => true,
                Some(_) => return None,
            };
            return words.next().is_none().then_some(Mark::Template {
                key,
                inputs,
                foreign,
            });
        }
        if let Some(short) = comment.strip_prefix(CLONE) {
            return hex16(short).map(|short| Mark::Clone { short });
        }
        let rest = comment.strip_prefix(POOL)?;
        let mut words = rest.split(' ');
        let key = Key::parse(words.next()?).ok()?;
        let inputs = digest(words.next()?.strip_prefix(INPUTS)?)?;
        let template = oid(words.next()?.strip_prefix("template=")?)?;
        let project = hex16(words.next()?.strip_prefix("project=")?)?;
        words.next().is_none().then_some(Mark::Pool {
            key,
            inputs,
            template,
            project,
        })
    }
}

/// Whether `comment` is a mark of migsnap's, of this version's formats or
/// an older one's (a v1 template's): a database under one of migsnap's names
/// without one is somebody else's, and is never replaced.
pub fn by_migsnap(comment: &str) -> bool {
    comment.starts_with(MIGSNAP)
}

/// A sha256 in lowercase hex, as `Checked::digest` writes it.
fn digest(text: &str) -> Option<String> {
    // A key has that very shape.
    Key::parse(text).ok().map(|_| text.to_string())
}

fn hex16(text: &str) -> Option<String> {
    let lower = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    (text.len() == crate::key::SHORT_LEN && text.bytes().all(lower)).then(|| text.to_string())
}

/// An oid as `u32`'s `Display` writes it: no sign, no leading zero.
fn oid(text: &str) -> Option<u32> {
    let n: u32 = text.parse().ok()?;
    (n.to_string() == text).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const K: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const I: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

    fn key() -> Key {
        Key::parse(K).expect("key")
    }

    /// The formats on databases made before this codec existed, as those
    /// versions wrote them (`template_comment`, `FOREIGN_MARK`,
    /// `CLONE_COMMENT`, `member_comment`): they must still be read.
    #[test]
    fn reads_the_formats_existing_databases_carry() {
        let template = format!("migsnap template v2 key={K} inputs={I}");
        let foreign = format!("{template} foreign");
        let clone = "migsnap clone of 0123456789abcdef";
        let pool =
            format!("migsnap pool key={K} inputs={I} template=16384 project=00ff00ff00ff00ff");
        let expected = [
            (
                template.as_str(),
                Mark::Template {
                    key: key(),
                    inputs: I.into(),
                    foreign: false,
                },
            ),
            (
                foreign.as_str(),
                Mark::Template {
                    key: key(),
                    inputs: I.into(),
                    foreign: true,
                },
            ),
            (
                clone,
                Mark::Clone {
                    short: "0123456789abcdef".into(),
                },
            ),
            (
                pool.as_str(),
                Mark::Pool {
                    key: key(),
                    inputs: I.into(),
                    template: 16384,
                    project: "00ff00ff00ff00ff".into(),
                },
            ),
        ];
        for (text, mark) in expected {
            assert_eq!(Mark::parse(text), Some(mark.clone()), "{text}");
            assert_eq!(mark.encode(), text);
            assert!(by_migsnap(text));
        }
    }

    #[test]
    fn near_misses_are_no_marks() {
        for text in [
            "",
            "migsnap",
            "migsnap clone of ",
            "migsnap clone of 0123456789ABCDEF",
            "migsnap clone of 0123456789abcdef ",
            "migsnap clone of 0123456789abcde",
            &format!("migsnap template v1 key={K}"),
            &format!("migsnap template v2 key={K}"),
            &format!("migsnap template v2 key={K} inputs={I} foreign "),
            &format!("migsnap template v2 key={K} inputs={I} foreign foreign"),
            &format!("migsnap template v2 key={K} inputs={I}  foreign"),
            &format!("migsnap template v2 key={K}  inputs={I}"),
            &format!("Migsnap template v2 key={K} inputs={I}"),
            &format!("migsnap pool key={K} inputs={I} template=016384 project=00ff00ff00ff00ff"),
            &format!("migsnap pool key={K} inputs={I} template=+1 project=00ff00ff00ff00ff"),
            &format!("migsnap pool key={K} inputs={I} template=1 project=00ff00ff00ff00f"),
            &format!("migsnap pool key={K} inputs={I} project=00ff00ff00ff00ff template=1"),
        ] {
            assert_eq!(Mark::parse(text), None, "{text:?}");
        }
        // An older template format is still migsnap's (rebuilt, not refused).
        assert!(by_migsnap(&format!("migsnap template v1 key={K}")));
        assert!(!by_migsnap("a test database"));
    }

    fn hex(len: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(proptest::sample::select(b"0123456789abcdef".to_vec()), len)
            .prop_map(|b| String::from_utf8(b).expect("ascii"))
    }

    fn mark() -> impl Strategy<Value = Mark> {
        let key = || hex(64).prop_map(|k| Key::parse(&k).expect("hex"));
        prop_oneof![
            (key(), hex(64), any::<bool>()).prop_map(|(key, inputs, foreign)| {
                Mark::Template {
                    key,
                    inputs,
                    foreign,
                }
            }),
            hex(16).prop_map(|short| Mark::Clone { short }),
            (key(), hex(64), any::<u32>(), hex(16)).prop_map(|(key, inputs, template, project)| {
                Mark::Pool {
                    key,
                    inputs,
                    template,
                    project,
                }
            }),
        ]
    }

    /// Text near the marks: their own words and separators, pieces of
    /// valid marks, and what a hand-written comment may hold (spaces, `=`,
    /// quotes, non-ASCII, nothing at all).
    fn near_text() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just(String::new()),
            Just(" ".to_string()),
            Just("=".to_string()),
            Just("'".to_string()),
            Just("\"".to_string()),
            Just("é".to_string()),
            Just("\u{0}".to_string()),
            Just("\n".to_string()),
            Just(TEMPLATE.to_string()),
            Just(CLONE.to_string()),
            Just(POOL.to_string()),
            Just(INPUTS.to_string()),
            Just("template=".to_string()),
            Just("project=".to_string()),
            Just(FOREIGN.to_string()),
            Just("0".to_string()),
            hex(16),
            hex(64),
            any::<u32>().prop_map(|n| n.to_string()),
            mark().prop_map(|m| m.encode()),
            ".*",
        ];
        proptest::collection::vec(piece, 0..6).prop_map(|p| p.concat())
    }

    proptest! {
        #[test]
        fn every_mark_reads_back_as_itself(m in mark()) {
            let text = m.encode();
            prop_assert!(by_migsnap(&text));
            prop_assert_eq!(Mark::parse(&text), Some(m));
        }

        /// Parsing accepts nothing but what `encode` writes: one text per
        /// mark, so comparing marks is comparing comments.
        #[test]
        fn what_parses_is_its_own_encoding(text in near_text()) {
            if let Some(m) = Mark::parse(&text) {
                prop_assert_eq!(m.encode(), text);
            }
        }
    }
}
