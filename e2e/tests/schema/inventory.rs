//! `inventory.json`: the schema inventory (`/work/shared/schema-inventory.md`) in machine-readable
//! form, derived once from the document and kept here, with the choices made where the document is
//! ambiguous or contradicts itself (each table, column, constraint or index may name one).
//! [`expected`] turns it into the [`Schema`] the migrations must produce.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::model::{Check, Column, ForeignKey, Index, Policy, Role, Schema, Table};
use crate::normalise;

pub const JSON: &str = include_str!("inventory.json");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    pub about: String,
    /// Choices that concern the whole schema rather than one table.
    pub general_choices: Vec<String>,
    pub ignored_tables: Vec<String>,
    pub row_level_security: RowLevelSecurity,
    pub choices: Vec<Choice>,
    pub tables: Vec<TableSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowLevelSecurity {
    pub policy: String,
    pub expression: String,
    pub roles: Vec<RoleSpec>,
    /// What each role holds on every table, unless `grants` says otherwise.
    pub privileges: Vec<String>,
    pub no_privileges_on: Vec<String>,
    /// Whether row-level security is forced (binds the owner) where it is enabled.
    pub force: bool,
    /// Narrower privileges of one role on some tables.
    pub grants: Vec<GrantSpec>,
    pub choices: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantSpec {
    pub role: String,
    pub tables: Vec<String>,
    pub privileges: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSpec {
    pub name: String,
    pub login: bool,
    pub superuser: bool,
    pub bypassrls: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Choice {
    pub id: String,
    pub text: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    pub name: String,
    /// The inventory's section (1.1 … 1.9); none for a table the inventory does not have.
    pub section: Option<String>,
    /// `inventory`, or `addition` for a table of the core the inventory does not list.
    pub origin: String,
    /// The migration that creates it (without `.sql`).
    pub migration: String,
    pub rls: bool,
    pub choices: Vec<String>,
    pub columns: Vec<ColumnSpec>,
    pub primary_key: Vec<String>,
    pub unique: Vec<UniqueSpec>,
    pub foreign_keys: Vec<ForeignKeySpec>,
    pub checks: Vec<CheckSpec>,
    pub indexes: Vec<IndexSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    pub name: String,
    /// As the inventory writes it (`VARCHAR(255)`, `TIMESTAMP`, `TEXT[]`).
    #[serde(rename = "type")]
    pub data_type: String,
    pub nullable: bool,
    /// As the inventory writes it (`'active'`, `NOW()`, `SERIAL`), or none.
    pub default: Option<String>,
    pub choice: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UniqueSpec {
    pub name: String,
    pub columns: Vec<String>,
    pub choice: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForeignKeySpec {
    pub name: String,
    pub columns: Vec<String>,
    pub references: String,
    pub referenced_columns: Vec<String>,
    pub on_delete: String,
    pub deferrable: bool,
    pub choice: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    pub name: String,
    pub columns: Vec<String>,
    pub values: Vec<String>,
    pub choice: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexSpec {
    pub name: String,
    /// Key expressions, each optionally followed by an operator class and `desc`.
    pub columns: Vec<String>,
    pub method: String,
    pub unique: bool,
    #[serde(rename = "where")]
    pub predicate: Option<String>,
    pub choice: Option<String>,
}

pub fn load() -> Inventory {
    serde_json::from_str(JSON).expect("e2e/tests/schema/inventory.json is valid")
}

/// The schema the migrations must produce.
pub fn expected(inventory: &Inventory) -> Schema {
    let rls = &inventory.row_level_security;
    let mut schema = Schema::default();
    for spec in &inventory.tables {
        let mut table = Table {
            primary_key: spec.primary_key.clone(),
            row_level_security: spec.rls,
            force_row_level_security: spec.rls && rls.force,
            ..Table::default()
        };
        for c in &spec.columns {
            table.columns.insert(
                c.name.clone(),
                Column {
                    data_type: normalise::type_name(&c.data_type),
                    nullable: c.nullable,
                    default: c
                        .default
                        .as_deref()
                        .and_then(|d| normalise::default_value(Some(d), None)),
                },
            );
        }
        for u in &spec.unique {
            table.uniques.insert(u.name.clone(), u.columns.clone());
        }
        for f in &spec.foreign_keys {
            table.foreign_keys.insert(
                f.name.clone(),
                ForeignKey {
                    columns: f.columns.clone(),
                    references: f.references.clone(),
                    referenced_columns: f.referenced_columns.clone(),
                    on_delete: f.on_delete.clone(),
                    on_update: "no action".to_owned(),
                    deferrable: f.deferrable,
                    initially_deferred: false,
                },
            );
        }
        for c in &spec.checks {
            table.checks.insert(
                c.name.clone(),
                Check {
                    columns: c.columns.clone(),
                    values: c.values.iter().cloned().collect(),
                },
            );
        }
        for i in &spec.indexes {
            table.indexes.insert(
                i.name.clone(),
                Index {
                    unique: i.unique,
                    method: i.method.clone(),
                    keys: i.columns.iter().map(|k| normalise::expression(k)).collect(),
                    predicate: i.predicate.as_deref().map(normalise::expression),
                },
            );
        }
        if spec.rls {
            let expression = normalise::expression(&rls.expression);
            table.policies.insert(
                rls.policy.clone(),
                Policy {
                    command: "all".to_owned(),
                    roles: vec!["public".to_owned()],
                    using: Some(expression.clone()),
                    with_check: Some(expression),
                },
            );
        }
        schema.tables.insert(spec.name.clone(), table);
        for role in &rls.roles {
            schema.privileges.insert(
                (spec.name.clone(), role.name.clone()),
                rls.privileges.iter().cloned().collect(),
            );
        }
    }
    for grant in &rls.grants {
        for table in &grant.tables {
            schema.privileges.insert(
                (table.clone(), grant.role.clone()),
                grant.privileges.iter().cloned().collect(),
            );
        }
    }
    for table in &rls.no_privileges_on {
        for role in &rls.roles {
            schema
                .privileges
                .insert((table.clone(), role.name.clone()), BTreeSet::new());
        }
    }
    schema.roles = rls
        .roles
        .iter()
        .map(|r| {
            (
                r.name.clone(),
                Role {
                    login: r.login,
                    superuser: r.superuser,
                    bypass_row_level_security: r.bypassrls,
                },
            )
        })
        .collect::<BTreeMap<_, _>>();
    schema
}

impl Inventory {
    pub fn role_names(&self) -> Vec<String> {
        self.row_level_security
            .roles
            .iter()
            .map(|r| r.name.clone())
            .collect()
    }
}
