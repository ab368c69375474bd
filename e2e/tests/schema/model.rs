//! One shape for both sides of the conformance check: the schema the inventory describes
//! (`inventory.rs`) and the schema the catalog holds (`catalog.rs`). Every text in it is already
//! normalised (`normalise.rs`), so comparing is plain equality (`compare.rs`).

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Schema {
    pub tables: BTreeMap<String, Table>,
    /// The roles the schema grants to, by name.
    pub roles: BTreeMap<String, Role>,
    /// (table, role) → the privileges the role holds on the table, for every table the roles
    /// are expected to reach (and the ones they must not).
    pub privileges: BTreeMap<(String, String), BTreeSet<String>>,
    /// sequence → the roles that may use it (catalog side only: every role must).
    pub sequence_usage: BTreeMap<String, BTreeSet<String>>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    pub columns: BTreeMap<String, Column>,
    pub primary_key: Vec<String>,
    /// Unique constraints (not unique indexes, which are in `indexes`): name → columns.
    pub uniques: BTreeMap<String, Vec<String>>,
    pub foreign_keys: BTreeMap<String, ForeignKey>,
    pub checks: BTreeMap<String, Check>,
    /// Indexes that do not back a primary key or unique constraint.
    pub indexes: BTreeMap<String, Index>,
    pub row_level_security: bool,
    pub force_row_level_security: bool,
    pub policies: BTreeMap<String, Policy>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub data_type: String,
    pub nullable: bool,
    pub default: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ForeignKey {
    pub columns: Vec<String>,
    pub references: String,
    pub referenced_columns: Vec<String>,
    pub on_delete: String,
    pub on_update: String,
    pub deferrable: bool,
    pub initially_deferred: bool,
}

/// A check constraint, compared by its columns and the literals it allows (the inventory's
/// checks are all "column in (values)").
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub columns: Vec<String>,
    pub values: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Index {
    pub unique: bool,
    pub method: String,
    /// Key expressions in order, each with a non-default operator class and `desc` if any.
    pub keys: Vec<String>,
    pub predicate: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub command: String,
    pub roles: Vec<String>,
    pub using: Option<String>,
    pub with_check: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Role {
    pub login: bool,
    pub superuser: bool,
    pub bypass_row_level_security: bool,
}

impl Column {
    pub fn describe(&self) -> String {
        format!(
            "{}, {}, {}",
            self.data_type,
            if self.nullable {
                "nullable"
            } else {
                "not null"
            },
            match &self.default {
                Some(d) => format!("default {d}"),
                None => "no default".to_owned(),
            }
        )
    }
}

impl ForeignKey {
    pub fn describe(&self) -> String {
        format!(
            "({}) references {} ({}) on delete {}{}{}{}",
            self.columns.join(", "),
            self.references,
            self.referenced_columns.join(", "),
            self.on_delete,
            if self.on_update == "no action" {
                String::new()
            } else {
                format!(" on update {}", self.on_update)
            },
            if self.deferrable { " deferrable" } else { "" },
            if self.initially_deferred {
                " initially deferred"
            } else {
                ""
            },
        )
    }
}

impl Check {
    pub fn describe(&self) -> String {
        let values: Vec<&str> = self.values.iter().map(String::as_str).collect();
        format!("({}) in [{}]", self.columns.join(", "), values.join(", "))
    }
}

impl Index {
    pub fn describe(&self) -> String {
        format!(
            "{}{} ({}){}",
            if self.unique { "unique " } else { "" },
            self.method,
            self.keys.join(", "),
            match &self.predicate {
                Some(p) => format!(" where {p}"),
                None => String::new(),
            }
        )
    }
}

impl Policy {
    pub fn describe(&self) -> String {
        format!(
            "for {} to {} using ({}) with check ({})",
            self.command,
            self.roles.join(", "),
            self.using.as_deref().unwrap_or("-"),
            self.with_check.as_deref().unwrap_or("-"),
        )
    }
}

impl Role {
    pub fn describe(&self) -> String {
        format!(
            "{}, {}, {}",
            if self.login { "login" } else { "nologin" },
            if self.superuser {
                "superuser"
            } else {
                "nosuperuser"
            },
            if self.bypass_row_level_security {
                "bypassrls"
            } else {
                "nobypassrls"
            },
        )
    }
}
