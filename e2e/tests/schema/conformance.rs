//! The migrated schema is the inventory's, with zero differences; and the comparison is not
//! vacuous: a deliberately altered database is reported difference by difference, and a change to
//! any column of any table is named.

use std::collections::BTreeSet;

use e2e::TestDb;

use crate::inventory::{self, Inventory};
use crate::model::Column;
use crate::{catalog, compare, schema_differences};

fn sorted(mut lines: Vec<String>) -> Vec<String> {
    lines.sort();
    lines
}

#[tokio::test]
async fn the_migrated_schema_is_the_inventorys() {
    let db = TestDb::new().await;
    let differences = schema_differences(&db.pool).await;
    assert!(
        differences.is_empty(),
        "{} difference(s) between e2e/tests/schema/inventory.json and the migrated database:\n{}",
        differences.len(),
        differences.join("\n")
    );
}

#[tokio::test]
async fn an_altered_column_and_an_added_column_are_named_and_nothing_else() {
    let db = TestDb::new().await;
    sqlx::raw_sql(
        "alter table contacts alter column language drop default; \
         alter table notes add column oops int;",
    )
    .execute(&db.pool)
    .await
    .unwrap();

    assert_eq!(
        schema_differences(&db.pool).await,
        vec![
            "contacts.language: default differs: expected 'en', found none",
            "notes.oops: unexpected column (integer, nullable, no default)",
        ]
    );
}

#[tokio::test]
async fn every_kind_of_difference_is_named() {
    let db = TestDb::new().await;
    sqlx::raw_sql(
        "alter table messages alter column text type varchar(100); \
         alter table notes alter column content drop not null; \
         alter table channels alter column status set default 'active'; \
         alter table campaigns drop column goal_value; \
         alter table automations drop constraint automations_pkey; \
         alter table trackings drop constraint trackings_click_id_key; \
         alter table invoices drop constraint invoices_subscription_id_fkey; \
         alter table invoices add constraint invoices_subscription_id_fkey \
             foreign key (subscription_id) references subscriptions (id) on delete cascade; \
         alter table chats drop constraint chats_status_check; \
         alter table chats add constraint chats_status_check check (status in ('active', 'archived')); \
         drop index chats_status_idx; \
         create index chats_subject_idx on chats (subject); \
         drop index broadcasts_scheduled_for_idx; \
         create index broadcasts_scheduled_for_idx on broadcasts (scheduled_for); \
         alter table credentials disable row level security; \
         drop policy tenant_isolation on notes; \
         revoke delete on usage_meters from ventros_app; \
         drop table campaign_steps; \
         create table scratch (id int);",
    )
    .execute(&db.pool)
    .await
    .unwrap();

    let policy = "for all to public \
                  using (tenant_id = current_setting('app.current_tenant_id', true)) \
                  with check (tenant_id = current_setting('app.current_tenant_id', true))";
    let expected = vec![
        "messages.text: type differs: expected text, found character varying(100)".to_owned(),
        "notes.content: nullability differs: expected not null, found nullable".to_owned(),
        "channels.status: default differs: expected 'inactive', found 'active'".to_owned(),
        "campaigns.goal_value: missing column (integer, nullable, default 0)".to_owned(),
        "automations: primary key differs: expected (id), found ()".to_owned(),
        "trackings: unique constraint trackings_click_id_key: missing ((click_id))".to_owned(),
        "invoices: foreign key invoices_subscription_id_fkey: differs: expected (subscription_id) \
         references subscriptions (id) on delete set null, found (subscription_id) references \
         subscriptions (id) on delete cascade"
            .to_owned(),
        "chats: check chats_status_check: differs: expected (status) in [active, archived, closed], \
         found (status) in [active, archived]"
            .to_owned(),
        "chats: index chats_status_idx: missing (btree (status))".to_owned(),
        "chats: index chats_subject_idx: unexpected (btree (subject))".to_owned(),
        "broadcasts: index broadcasts_scheduled_for_idx: differs: expected btree (scheduled_for) \
         where status = 'scheduled', found btree (scheduled_for)"
            .to_owned(),
        "credentials: row-level security differs: expected enabled, found disabled".to_owned(),
        format!("notes: policy tenant_isolation: missing ({policy})"),
        "usage_meters: privileges of ventros_app differ: expected delete, insert, select, update, \
         found insert, select, update"
            .to_owned(),
        "campaign_steps: missing table".to_owned(),
        "scratch: unexpected table, not in the inventory (1 columns)".to_owned(),
    ];
    assert_eq!(sorted(schema_differences(&db.pool).await), sorted(expected));
}

/// What a column change looks like, and the change.
type Mutation = (&'static str, fn(&mut Column));

const MUTATIONS: [Mutation; 3] = [
    ("type differs", |c| c.data_type.push_str("_changed")),
    ("nullability differs", |c| c.nullable = !c.nullable),
    ("default differs", |c| {
        c.default = match c.default {
            Some(_) => None,
            None => Some("'changed'".to_owned()),
        }
    }),
];

/// Every column of every table, changed in turn (type, nullability, default, dropped) and every
/// table given an extra column: the comparison names exactly that column, once. The changes are
/// made to the catalog's picture of a freshly migrated database, which conforms, so this covers
/// all of the ~680 columns without altering a database 2,700 times.
#[tokio::test]
async fn a_change_to_any_column_of_any_table_is_named() {
    let db = TestDb::new().await;
    let inventory = inventory::load();
    let expected = inventory::expected(&inventory);
    let mut conn = db.pool.acquire().await.unwrap();
    let actual = catalog::read(
        &mut conn,
        &inventory.ignored_tables,
        &inventory.role_names(),
    )
    .await
    .unwrap();
    assert!(compare::differences(&expected, &actual).is_empty());

    let mut checked = 0;
    for (table, t) in &actual.tables {
        for column in t.columns.keys() {
            let prefix = format!("{table}.{column}: ");
            for (what, mutate) in MUTATIONS {
                let mut changed = actual.clone();
                let c = changed
                    .tables
                    .get_mut(table)
                    .and_then(|t| t.columns.get_mut(column))
                    .unwrap();
                mutate(c);
                let found = compare::differences(&expected, &changed);
                assert_eq!(found.len(), 1, "{prefix}{what}: {found:?}");
                assert!(
                    found[0].starts_with(&format!("{prefix}{what}: expected ")),
                    "{found:?}"
                );
                checked += 1;
            }
            let mut dropped = actual.clone();
            dropped
                .tables
                .get_mut(table)
                .unwrap()
                .columns
                .remove(column);
            let found = compare::differences(&expected, &dropped);
            assert_eq!(found.len(), 1, "{found:?}");
            assert!(found[0].starts_with(&format!("{prefix}missing column (")));
        }
        let mut extra = actual.clone();
        let first = t.columns.values().next().unwrap().clone();
        extra
            .tables
            .get_mut(table)
            .unwrap()
            .columns
            .insert("zz_extra".to_owned(), first);
        let found = compare::differences(&expected, &extra);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with(&format!("{table}.zz_extra: unexpected column (")));
    }
    let columns: usize = expected.tables.values().map(|t| t.columns.len()).sum();
    assert_eq!(checked, 3 * columns);
}

/// The conformance data holds together: the 43 tables the inventory describes plus the core's
/// one addition, each created by the migration it names; every index, key and check on columns
/// of its table; every foreign key to a described table; row-level security exactly where there
/// is a tenant_id; every choice referenced exists and every choice is referenced.
#[test]
fn the_conformance_data_holds_together() {
    let inventory: Inventory = inventory::load();
    assert!(!inventory.about.is_empty());
    let tables: BTreeSet<&str> = inventory.tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        tables.len(),
        inventory.tables.len(),
        "table names are unique"
    );
    assert_eq!(
        inventory
            .tables
            .iter()
            .filter(|t| t.origin == "inventory" && t.section.is_some())
            .count(),
        43,
        "the inventory describes 43 tables (it says 48: see choice tables-48-vs-43)"
    );
    assert_eq!(
        inventory
            .tables
            .iter()
            .filter(|t| t.origin == "addition")
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>(),
        vec![
            "idempotency_keys",
            "dead_letter_events",
            "contact_data_keys",
            "webhook_deliveries",
            "webhook_intake"
        ],
        "the core's own tables, beyond the inventory"
    );

    let choices: BTreeSet<&str> = inventory.choices.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        choices.len(),
        inventory.choices.len(),
        "choice ids are unique"
    );
    for c in &inventory.choices {
        assert!(
            c.text.len() > 40,
            "choice {} says what was chosen and why",
            c.id
        );
    }
    let mut used: BTreeSet<&str> = inventory
        .row_level_security
        .choices
        .iter()
        .chain(&inventory.general_choices)
        .map(String::as_str)
        .collect();

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    for t in &inventory.tables {
        let sql = std::fs::read_to_string(dir.join(format!("{}.sql", t.migration)))
            .unwrap_or_else(|e| panic!("{}: migration {}: {e}", t.name, t.migration));
        assert!(
            sql.contains(&format!("create table {} (", t.name)),
            "{} is created by {}",
            t.name,
            t.migration
        );
        let columns: BTreeSet<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            columns.len(),
            t.columns.len(),
            "{}: column names are unique",
            t.name
        );
        assert_eq!(
            t.rls,
            columns.contains("tenant_id"),
            "{}: row-level security exactly where there is a tenant_id",
            t.name
        );
        let on_columns = |what: &str, cols: &[String]| {
            for c in cols {
                assert!(
                    columns.contains(c.as_str()),
                    "{}: {what} on unknown column {c}",
                    t.name
                );
            }
        };
        on_columns("primary key", &t.primary_key);
        for u in &t.unique {
            on_columns(&u.name, &u.columns);
        }
        for c in &t.checks {
            on_columns(&c.name, &c.columns);
            assert!(
                !c.values.is_empty(),
                "{}: {} allows something",
                t.name,
                c.name
            );
        }
        for f in &t.foreign_keys {
            on_columns(&f.name, &f.columns);
            let target = inventory
                .tables
                .iter()
                .find(|x| x.name == f.references)
                .unwrap_or_else(|| {
                    panic!("{}: {} references an undescribed table", t.name, f.name)
                });
            for c in &f.referenced_columns {
                assert!(
                    target.columns.iter().any(|x| &x.name == c),
                    "{}: {}",
                    t.name,
                    f.name
                );
            }
            assert!(
                ["no action", "restrict", "cascade", "set null"].contains(&f.on_delete.as_str()),
                "{}: {}",
                t.name,
                f.name
            );
        }
        for i in &t.indexes {
            assert!(["btree", "gin"].contains(&i.method.as_str()), "{}", i.name);
            for key in &i.columns {
                // a plain key is a column, optionally followed by an operator class or desc;
                // an expression key (case …, coalesce(…), ->>) is checked by the live comparison.
                let first = key.split(' ').next().unwrap_or_default();
                let plain = key.split(' ').count() <= 2
                    && first
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit());
                if plain {
                    assert!(
                        columns.contains(first),
                        "{}: index on unknown column {key}",
                        i.name
                    );
                }
            }
        }
        let referenced = t
            .choices
            .iter()
            .map(String::as_str)
            .chain(t.columns.iter().filter_map(|c| c.choice.as_deref()))
            .chain(t.unique.iter().filter_map(|c| c.choice.as_deref()))
            .chain(t.foreign_keys.iter().filter_map(|c| c.choice.as_deref()))
            .chain(t.checks.iter().filter_map(|c| c.choice.as_deref()))
            .chain(t.indexes.iter().filter_map(|c| c.choice.as_deref()));
        for choice in referenced {
            assert!(
                choices.contains(choice),
                "{}: unknown choice {choice}",
                t.name
            );
            used.insert(choice);
        }
    }
    let unused: Vec<&&str> = choices.difference(&used).collect();
    assert!(unused.is_empty(), "choices no table refers to: {unused:?}");
}
