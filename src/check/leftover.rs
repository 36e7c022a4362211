//! Index names a rename left behind (issue #25): PostgreSQL renames a table
//! or a column without renaming the indexes Django named after it, so a
//! migrated database keeps `catalog_category_slug_key` where a database
//! built from the models has `catalog_group_slug_key`. No migration
//! mentions such a name (Django made it up), so `attribute` finds nothing;
//! this finds the `RenameModel`, `RenameField` or `AlterField(db_column=…)`
//! whose old name the index still carries.
//!
//! Read from the migration files' text, as `attribute` reads them: the
//! operations are written by makemigrations in a regular form (keyword or
//! positional string arguments), and a miss only leaves a finding
//! unexplained, as before.

use super::{MigrationRef, MigrationSource};
use serde::{Deserialize, Serialize};

/// The operation whose old name an index still carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeftBy {
    /// `RenameModel`, `RenameField` or `AlterField`.
    pub operation: String,
    /// The old table (RenameModel) or column (the others) in the name.
    pub old_name: String,
    pub migration: MigrationRef,
}

/// Django's index and constraint names keep at least this much of the
/// table's name (`_create_index_name` cuts the table part to
/// `(63 - len(hash + suffix)) // 2 - 1` characters, 24 with a `_like` or
/// `_uniq` suffix) before `_`.
const TABLE_PART: usize = 24;

/// A rename found in a migration file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rename {
    operation: &'static str,
    /// The table the renamed thing belonged to (RenameModel: the old one).
    table: String,
    /// RenameModel: the old table; the others: the old column.
    old: String,
    at: MigrationRef,
}

/// The operation that left `index` (on `table`) with a name the model
/// state would not give it, if a migration renamed what the name was
/// made from. The latest such rename wins.
pub fn explain(index: &str, table: &str, sources: &[MigrationSource]) -> Option<LeftBy> {
    renames(sources)
        .into_iter()
        .rev()
        .find(|r| carries(index, table, r))
        .map(|r| LeftBy {
            operation: r.operation.to_string(),
            old_name: r.old,
            migration: r.at,
        })
}

/// Whether `index` on `table` carries the old name of `r`.
fn carries(index: &str, table: &str, r: &Rename) -> bool {
    match r.operation {
        // Named after the old table, and not after the current one (a
        // table renamed to a longer name starting with the old one).
        "RenameModel" => starts_with_table(index, &r.old) && !starts_with_table(index, table),
        // On the same table, with the old column between the table part
        // and the hash.
        _ => {
            r.table == table
                && starts_with_table(index, table)
                && [r.old.clone(), format!("{}_id", r.old)]
                    .iter()
                    .any(|c| index.contains(&format!("_{c}_")) || index.ends_with(&format!("_{c}")))
        }
    }
}

fn starts_with_table(index: &str, table: &str) -> bool {
    let part = &table[..table.len().min(TABLE_PART)];
    index
        .strip_prefix(part)
        .is_some_and(|rest| rest.starts_with('_') || (part.len() < table.len() && !rest.is_empty()))
}

/// Every RenameModel, RenameField and AlterField with a `db_column`, in
/// migration order.
fn renames(sources: &[MigrationSource]) -> Vec<Rename> {
    let mut out = vec![];
    for src in sources {
        let lines: Vec<&str> = src.text.split('\n').collect();
        for (n, line) in lines.iter().enumerate() {
            let Some(operation) = ["RenameModel(", "RenameField(", "AlterField("]
                .into_iter()
                .find(|op| line.contains(op))
            else {
                continue;
            };
            let call = call_text(&lines[n..], operation);
            let args = arguments(&call);
            let at = MigrationRef {
                app: src.app.clone(),
                name: src.name.clone(),
                path: src.path.clone(),
                line: n + 1,
            };
            let table_of = |model: &str| format!("{}_{}", src.app, model.to_ascii_lowercase());
            let rename = match operation {
                "RenameModel(" => args.get("old_name", 0).map(|old| Rename {
                    operation: "RenameModel",
                    table: table_of(&old),
                    old: table_of(&old),
                    at,
                }),
                "RenameField(" => match (args.get("model_name", 0), args.get("old_name", 1)) {
                    (Some(model), Some(old)) => Some(Rename {
                        operation: "RenameField",
                        table: table_of(&model),
                        old,
                        at,
                    }),
                    _ => None,
                },
                // A column renamed through db_column: the old column was
                // (usually) the field's name.
                _ if call.contains("db_column=") => {
                    match (args.get("model_name", 0), args.get("name", 1)) {
                        (Some(model), Some(name)) => Some(Rename {
                            operation: "AlterField",
                            table: table_of(&model),
                            old: name,
                            at,
                        }),
                        _ => None,
                    }
                }
                _ => None,
            };
            out.extend(rename);
        }
    }
    out
}

/// The text of the call that starts on the first line, to its closing
/// parenthesis (at most 40 lines).
fn call_text(lines: &[&str], operation: &str) -> String {
    let first = lines[0];
    let start = first.find(operation).map_or(0, |i| i + operation.len());
    let mut text = String::new();
    let mut depth = 1i32;
    for (i, line) in lines.iter().take(40).enumerate() {
        let part = if i == 0 { &first[start..] } else { line };
        for c in part.chars() {
            match c {
                '(' | '[' | '{' => depth += 1,
                ')' | ']' | '}' => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                return text;
            }
            text.push(c);
        }
        text.push('\n');
    }
    text
}

/// The top-level string arguments of a call: keyword ones by name, the
/// positional ones in order.
struct Arguments {
    keyword: Vec<(String, String)>,
    positional: Vec<Option<String>>,
}

impl Arguments {
    fn get(&self, name: &str, position: usize) -> Option<String> {
        self.keyword
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .or_else(|| self.positional.get(position).cloned().flatten())
    }
}

fn arguments(call: &str) -> Arguments {
    let mut parts = vec![];
    let (mut depth, mut quote, mut current) = (0i32, None::<char>, String::new());
    for c in call.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '(' | '[' | '{') => depth += 1,
            (None, ')' | ']' | '}') => depth -= 1,
            (None, ',') if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    let string = |s: &str| {
        let s = s.trim();
        let q = s.chars().next().filter(|c| *c == '"' || *c == '\'')?;
        s.strip_prefix(q)?.strip_suffix(q).map(str::to_string)
    };
    let mut args = Arguments {
        keyword: vec![],
        positional: vec![],
    };
    for part in parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some((k, v))
                if k.trim()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                if let Some(v) = string(v) {
                    args.keyword.push((k.trim().to_string(), v));
                }
            }
            _ => args.positional.push(string(part)),
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(name: &str, text: &str) -> MigrationSource {
        MigrationSource {
            app: "catalog".into(),
            name: name.into(),
            path: format!("catalog/migrations/{name}.py"),
            text: text.into(),
        }
    }

    #[test]
    fn names_left_by_renames_are_explained() {
        let sources = [source(
            "0005_rename",
            r#"class Migration(migrations.Migration):
    operations = [
        migrations.RenameModel(
            old_name="Category",
            new_name="Group",
        ),
        migrations.RenameField("product", 'title', "name"),
        migrations.AlterField(
            model_name="product",
            name="brand",
            field=models.CharField(db_column="maker", db_index=True, max_length=100),
        ),
    ]
"#,
        )];
        // (index, its table) -> (operation, old name, line of the operation)
        for (index, table, expected) in [
            (
                "catalog_category_slug_key",
                "catalog_group",
                ("RenameModel", "catalog_category", 3),
            ),
            (
                "catalog_product_title_0a1b2c3d_like",
                "catalog_product",
                ("RenameField", "title", 7),
            ),
            (
                "catalog_product_brand_9f8e7d6c",
                "catalog_product",
                ("AlterField", "brand", 8),
            ),
        ] {
            let left = explain(index, table, &sources).expect(index);
            assert_eq!(
                (
                    left.operation.as_str(),
                    left.old_name.as_str(),
                    left.migration.line
                ),
                expected
            );
        }
        // A name after the current table and columns: nothing to explain.
        assert_eq!(
            explain("catalog_group_slug_key", "catalog_group", &sources),
            None
        );
        assert_eq!(
            explain("catalog_product_sku_key", "catalog_product", &sources),
            None
        );
        // The old column on another table is not this one's.
        assert_eq!(
            explain("catalog_review_title_idx", "catalog_review", &sources),
            None
        );
    }

    #[test]
    fn long_table_names_are_cut_as_django_cuts_them() {
        let sources = [source(
            "0009_x",
            "        migrations.RenameModel(old_name=\"VeryLongModelNameForInvoices\", new_name=\"Bill\"),\n",
        )];
        // catalog_verylongmodelnameforinvoices cut to 24 characters.
        let left = explain(
            "catalog_verylongmodelname_number_1a2b3c4d_uniq",
            "catalog_bill",
            &sources,
        );
        assert_eq!(
            left.map(|l| l.old_name),
            Some("catalog_verylongmodelnameforinvoices".to_string())
        );
    }
}
