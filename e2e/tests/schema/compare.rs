//! The comparison: every difference between the schema the inventory describes and the one the
//! catalog holds, one readable line each, naming the table and the column, constraint, index,
//! policy or role. An empty list means the database conforms.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::Schema;

pub fn differences(expected: &Schema, actual: &Schema) -> Vec<String> {
    let mut out = Vec::new();
    let names: BTreeSet<&String> = expected.tables.keys().chain(actual.tables.keys()).collect();
    for name in names {
        match (expected.tables.get(name), actual.tables.get(name)) {
            (Some(_), None) => out.push(format!("{name}: missing table")),
            (None, Some(t)) => out.push(format!(
                "{name}: unexpected table, not in the inventory ({} columns)",
                t.columns.len()
            )),
            (Some(e), Some(a)) => table(name, e, a, &mut out),
            (None, None) => {}
        }
    }

    for (name, e) in &expected.roles {
        match actual.roles.get(name) {
            None => out.push(format!("role {name}: missing")),
            Some(a) if a != e => out.push(format!(
                "role {name}: attributes differ: expected {}, found {}",
                e.describe(),
                a.describe()
            )),
            Some(_) => {}
        }
    }

    for ((table, role), e) in &expected.privileges {
        if !actual.roles.contains_key(role)
            || (expected.tables.contains_key(table) && !actual.tables.contains_key(table))
        {
            continue; // already reported as a missing role or table
        }
        let a = actual
            .privileges
            .get(&(table.clone(), role.clone()))
            .cloned()
            .unwrap_or_default();
        if &a != e {
            out.push(format!(
                "{table}: privileges of {role} differ: expected {}, found {}",
                list(e),
                list(&a)
            ));
        }
    }

    for (sequence, users) in &actual.sequence_usage {
        for role in expected.roles.keys() {
            if actual.roles.contains_key(role) && !users.contains(role) {
                out.push(format!("sequence {sequence}: {role} lacks usage"));
            }
        }
    }
    out
}

fn table(name: &str, e: &crate::model::Table, a: &crate::model::Table, out: &mut Vec<String>) {
    for (column, ec) in &e.columns {
        match a.columns.get(column) {
            None => out.push(format!(
                "{name}.{column}: missing column ({})",
                ec.describe()
            )),
            Some(ac) => {
                if ec.data_type != ac.data_type {
                    out.push(format!(
                        "{name}.{column}: type differs: expected {}, found {}",
                        ec.data_type, ac.data_type
                    ));
                }
                if ec.nullable != ac.nullable {
                    let word = |n: bool| if n { "nullable" } else { "not null" };
                    out.push(format!(
                        "{name}.{column}: nullability differs: expected {}, found {}",
                        word(ec.nullable),
                        word(ac.nullable)
                    ));
                }
                if ec.default != ac.default {
                    let word = |d: &Option<String>| d.clone().unwrap_or_else(|| "none".to_owned());
                    out.push(format!(
                        "{name}.{column}: default differs: expected {}, found {}",
                        word(&ec.default),
                        word(&ac.default)
                    ));
                }
            }
        }
    }
    for (column, ac) in &a.columns {
        if !e.columns.contains_key(column) {
            out.push(format!(
                "{name}.{column}: unexpected column ({})",
                ac.describe()
            ));
        }
    }

    if e.primary_key != a.primary_key {
        out.push(format!(
            "{name}: primary key differs: expected ({}), found ({})",
            e.primary_key.join(", "),
            a.primary_key.join(", ")
        ));
    }

    named(
        name,
        "unique constraint",
        &e.uniques,
        &a.uniques,
        |c| format!("({})", c.join(", ")),
        out,
    );
    named(
        name,
        "foreign key",
        &e.foreign_keys,
        &a.foreign_keys,
        |f| f.describe(),
        out,
    );
    named(name, "check", &e.checks, &a.checks, |c| c.describe(), out);
    named(name, "index", &e.indexes, &a.indexes, |i| i.describe(), out);

    if e.row_level_security != a.row_level_security {
        let word = |on: bool| if on { "enabled" } else { "disabled" };
        out.push(format!(
            "{name}: row-level security differs: expected {}, found {}",
            word(e.row_level_security),
            word(a.row_level_security)
        ));
    }
    if e.force_row_level_security != a.force_row_level_security {
        out.push(format!(
            "{name}: force row-level security differs: expected {}, found {}",
            e.force_row_level_security, a.force_row_level_security
        ));
    }
    named(
        name,
        "policy",
        &e.policies,
        &a.policies,
        |p| p.describe(),
        out,
    );
}

/// Named things of one kind: missing, unexpected, or defined differently.
fn named<T: PartialEq>(
    table: &str,
    kind: &str,
    expected: &BTreeMap<String, T>,
    actual: &BTreeMap<String, T>,
    describe: impl Fn(&T) -> String,
    out: &mut Vec<String>,
) {
    for (name, e) in expected {
        match actual.get(name) {
            None => out.push(format!("{table}: {kind} {name}: missing ({})", describe(e))),
            Some(a) if a != e => out.push(format!(
                "{table}: {kind} {name}: differs: expected {}, found {}",
                describe(e),
                describe(a)
            )),
            Some(_) => {}
        }
    }
    for (name, a) in actual {
        if !expected.contains_key(name) {
            out.push(format!(
                "{table}: {kind} {name}: unexpected ({})",
                describe(a)
            ));
        }
    }
}

fn list(set: &BTreeSet<String>) -> String {
    if set.is_empty() {
        "none".to_owned()
    } else {
        set.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}
