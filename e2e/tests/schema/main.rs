//! The database schema against the inventory (issue 3): after migrating a fresh database, its
//! catalog must be the schema `inventory.json` describes (every table, column, type, default,
//! nullability, unique constraint, foreign key, check, index, row-level security policy and
//! grant), the migrations must apply from zero and re-run as a no-op, the policies must hide
//! another tenant's rows from the application role, and the event-sourced core must keep working
//! on the full schema. One binary, one module per concern; each test has its own database.

mod catalog;
mod compare;
mod inventory;
mod model;
mod normalise;

mod conformance;
mod core_on_full_schema;
mod migrations;
mod row_level_security;

use sqlx::PgPool;

/// Every difference between the inventory and the database behind `pool`, one line each.
pub async fn schema_differences(pool: &PgPool) -> Vec<String> {
    let inventory = inventory::load();
    let expected = inventory::expected(&inventory);
    let mut conn = pool.acquire().await.expect("connection");
    let actual = catalog::read(
        &mut conn,
        &inventory.ignored_tables,
        &inventory.role_names(),
    )
    .await
    .expect("read the catalog");
    compare::differences(&expected, &actual)
}
