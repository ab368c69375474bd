//! The live schema of a database, read from `information_schema` and `pg_catalog` into the
//! same [`Schema`] shape as the inventory: tables (`pg_class`), columns
//! (`information_schema.columns`, with `format_type` for the type), constraints
//! (`pg_constraint`), indexes (`pg_index` + `pg_class` + `pg_am` + `pg_opclass`), policies
//! (`pg_policies`), roles (`pg_roles`) and privileges (`has_table_privilege`,
//! `has_sequence_privilege`). Only the `public` schema is read.

use std::collections::BTreeSet;

use sqlx::PgConnection;

use crate::model::{Check, Column, ForeignKey, Index, Policy, Role, Schema, Table};
use crate::normalise;

/// The privileges a role could hold on a table.
const TABLE_PRIVILEGES: [&str; 7] = [
    "select",
    "insert",
    "update",
    "delete",
    "truncate",
    "references",
    "trigger",
];

/// Reads the schema. `ignored` tables (sqlx's bookkeeping) are left out of `tables` but their
/// privileges are read; `roles` are the roles whose attributes and privileges matter.
pub async fn read(
    conn: &mut PgConnection,
    ignored: &[String],
    roles: &[String],
) -> sqlx::Result<Schema> {
    let mut schema = Schema::default();

    let tables: Vec<(String, bool, bool)> = sqlx::query_as(
        "select c.relname::text, c.relrowsecurity, c.relforcerowsecurity \
         from pg_class c join pg_namespace n on n.oid = c.relnamespace \
         where n.nspname = 'public' and c.relkind in ('r', 'p')",
    )
    .fetch_all(&mut *conn)
    .await?;
    for (name, rls, force) in tables {
        if ignored.contains(&name) {
            continue;
        }
        schema.tables.insert(
            name,
            Table {
                row_level_security: rls,
                force_row_level_security: force,
                ..Table::default()
            },
        );
    }

    type ColumnRow = (String, String, String, bool, Option<String>, Option<String>);
    let columns: Vec<ColumnRow> = sqlx::query_as(
        "select c.table_name::text, c.column_name::text, format_type(a.atttypid, a.atttypmod), \
                c.is_nullable::text = 'YES', c.column_default::text, c.identity_generation::text \
         from information_schema.columns c \
         join pg_namespace n on n.nspname = c.table_schema \
         join pg_class t on t.relnamespace = n.oid and t.relname = c.table_name \
         join pg_attribute a on a.attrelid = t.oid and a.attname = c.column_name \
         where c.table_schema = 'public'",
    )
    .fetch_all(&mut *conn)
    .await?;
    for (table, column, data_type, nullable, default, identity) in columns {
        if let Some(t) = schema.tables.get_mut(&table) {
            t.columns.insert(
                column,
                Column {
                    data_type: normalise::type_name(&data_type),
                    nullable,
                    default: normalise::default_value(default.as_deref(), identity.as_deref()),
                },
            );
        }
    }

    type ConstraintRow = (
        String,
        String,
        String,
        Vec<String>,
        Option<String>,
        Vec<String>,
        String,
        String,
        bool,
        bool,
        String,
    );
    let constraints: Vec<ConstraintRow> = sqlx::query_as(
        "select t.relname::text, con.conname::text, con.contype::text, \
                array(select a.attname::text from unnest(con.conkey) with ordinality k(num, ord) \
                      join pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.num \
                      order by k.ord), \
                ft.relname::text, \
                array(select a.attname::text from unnest(con.confkey) with ordinality k(num, ord) \
                      join pg_attribute a on a.attrelid = con.confrelid and a.attnum = k.num \
                      order by k.ord), \
                con.confdeltype::text, con.confupdtype::text, con.condeferrable, con.condeferred, \
                pg_get_constraintdef(con.oid) \
         from pg_constraint con \
         join pg_class t on t.oid = con.conrelid \
         join pg_namespace n on n.oid = t.relnamespace \
         left join pg_class ft on ft.oid = con.confrelid \
         where n.nspname = 'public' and con.contype in ('p', 'u', 'f', 'c')",
    )
    .fetch_all(&mut *conn)
    .await?;
    for (
        table,
        name,
        kind,
        columns,
        references,
        ref_columns,
        del,
        upd,
        deferrable,
        deferred,
        def,
    ) in constraints
    {
        let Some(t) = schema.tables.get_mut(&table) else {
            continue;
        };
        match kind.as_str() {
            "p" => t.primary_key = columns,
            "u" => {
                t.uniques.insert(name, columns);
            }
            "f" => {
                t.foreign_keys.insert(
                    name,
                    ForeignKey {
                        columns,
                        references: references.unwrap_or_default(),
                        referenced_columns: ref_columns,
                        on_delete: referential_action(&del),
                        on_update: referential_action(&upd),
                        deferrable,
                        initially_deferred: deferred,
                    },
                );
            }
            _ => {
                t.checks.insert(
                    name,
                    Check {
                        columns,
                        values: normalise::literals(&def).into_iter().collect(),
                    },
                );
            }
        }
    }

    type IndexRow = (String, String, bool, String, Vec<String>, Option<String>);
    let indexes: Vec<IndexRow> = sqlx::query_as(
        "select t.relname::text, i.relname::text, ix.indisunique, am.amname::text, \
                array(select pg_get_indexdef(ix.indexrelid, k, true) \
                             || case when opc.opcdefault then '' else ' ' || opc.opcname end \
                             || case when ix.indoption[k - 1]::int & 1 = 1 then ' desc' else '' end \
                             || case when ix.indoption[k - 1]::int & 3 = 1 then ' nulls last' \
                                     when ix.indoption[k - 1]::int & 3 = 2 then ' nulls first' \
                                     else '' end \
                      from generate_series(1, ix.indnkeyatts::int) k \
                      join pg_opclass opc on opc.oid = ix.indclass[k - 1] \
                      order by k), \
                pg_get_expr(ix.indpred, ix.indrelid, true) \
         from pg_index ix \
         join pg_class t on t.oid = ix.indrelid \
         join pg_namespace n on n.oid = t.relnamespace \
         join pg_class i on i.oid = ix.indexrelid \
         join pg_am am on am.oid = i.relam \
         where n.nspname = 'public' \
           and not exists (select 1 from pg_constraint c \
                           where c.conindid = ix.indexrelid and c.conrelid = ix.indrelid \
                             and c.contype in ('p', 'u', 'x'))",
    )
    .fetch_all(&mut *conn)
    .await?;
    for (table, name, unique, method, keys, predicate) in indexes {
        if let Some(t) = schema.tables.get_mut(&table) {
            t.indexes.insert(
                name,
                Index {
                    unique,
                    method,
                    keys: keys.iter().map(|k| normalise::expression(k)).collect(),
                    predicate: predicate.as_deref().map(normalise::expression),
                },
            );
        }
    }

    type PolicyRow = (
        String,
        String,
        String,
        Vec<String>,
        Option<String>,
        Option<String>,
    );
    let policies: Vec<PolicyRow> = sqlx::query_as(
        "select tablename::text, policyname::text, lower(cmd), roles::text[], qual, with_check \
         from pg_policies where schemaname = 'public'",
    )
    .fetch_all(&mut *conn)
    .await?;
    for (table, name, command, roles, using, with_check) in policies {
        if let Some(t) = schema.tables.get_mut(&table) {
            t.policies.insert(
                name,
                Policy {
                    command,
                    roles,
                    using: using.as_deref().map(normalise::expression),
                    with_check: with_check.as_deref().map(normalise::expression),
                },
            );
        }
    }

    let role_rows: Vec<(String, bool, bool, bool)> = sqlx::query_as(
        "select rolname::text, rolcanlogin, rolsuper, rolbypassrls from pg_roles \
         where rolname = any($1)",
    )
    .bind(roles)
    .fetch_all(&mut *conn)
    .await?;
    for (name, login, superuser, bypass) in role_rows {
        schema.roles.insert(
            name,
            Role {
                login,
                superuser,
                bypass_row_level_security: bypass,
            },
        );
    }

    // Privileges only of roles that exist (has_table_privilege fails on an unknown role).
    let existing: Vec<String> = schema.roles.keys().cloned().collect();
    for role in &existing {
        let held: Vec<(String, String)> = sqlx::query_as(
            "select c.relname::text, p.privilege \
             from pg_class c join pg_namespace n on n.oid = c.relnamespace, \
                  unnest($2::text[]) p(privilege) \
             where n.nspname = 'public' and c.relkind in ('r', 'p') \
               and has_table_privilege($1, c.oid, p.privilege)",
        )
        .bind(role)
        .bind(&TABLE_PRIVILEGES[..])
        .fetch_all(&mut *conn)
        .await?;
        let tables: Vec<String> = sqlx::query_scalar(
            "select c.relname::text from pg_class c join pg_namespace n on n.oid = c.relnamespace \
             where n.nspname = 'public' and c.relkind in ('r', 'p')",
        )
        .fetch_all(&mut *conn)
        .await?;
        for table in tables {
            schema
                .privileges
                .insert((table, role.clone()), BTreeSet::new());
        }
        for (table, privilege) in held {
            schema
                .privileges
                .entry((table, role.clone()))
                .or_default()
                .insert(privilege);
        }
    }

    let sequences: Vec<String> = sqlx::query_scalar(
        "select c.relname::text from pg_class c join pg_namespace n on n.oid = c.relnamespace \
         where n.nspname = 'public' and c.relkind = 'S'",
    )
    .fetch_all(&mut *conn)
    .await?;
    for sequence in sequences {
        let mut users = BTreeSet::new();
        for role in &existing {
            let usage: bool =
                sqlx::query_scalar("select has_sequence_privilege($1, $2::regclass, 'usage')")
                    .bind(role)
                    .bind(&sequence)
                    .fetch_one(&mut *conn)
                    .await?;
            if usage {
                users.insert(role.clone());
            }
        }
        schema.sequence_usage.insert(sequence, users);
    }

    Ok(schema)
}

fn referential_action(code: &str) -> String {
    match code {
        "a" => "no action",
        "r" => "restrict",
        "c" => "cascade",
        "n" => "set null",
        "d" => "set default",
        other => other,
    }
    .to_owned()
}
