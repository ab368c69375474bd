//! The `domain_event_logs` projection: the audit trail, one row per event, keyed by the event's
//! id (so a second delivery inserts nothing).
//!
//! A row is its stored event, copied by the database from `contact_event_store` ([`insert_sql`]):
//! the payload in its stored (sealed) form, `published_at` when the event was committed to the
//! store (`created_at`, the moment it became a fact others can see). Nothing in it comes from a
//! message or from the clock, and the payload never travels out of the database and back. The
//! live path copies a batch's events by id; a rebuild copies the whole history in one statement
//! with the very same column list.

/// SQL: copies stored events into `domain_event_logs` (as resolved by the connection's
/// `search_path`); the caller appends the `where` condition on `contact_event_store e`, and
/// [`KEEP_EXISTING`] wherever the row may already be there.
pub fn copy_sql() -> String {
    format!(
        "insert into domain_event_logs (id, event_type, aggregate_id, aggregate_type, tenant_id, \
                                        project_id, user_id, payload, occurred_at, published_at, \
                                        created_at) \
         select e.id, e.event_type, e.aggregate_id, coalesce(e.aggregate_type, 'contact'), \
                e.tenant_id, e.project_id, {USER_ID}, e.event_data, e.occurred_at, \
                coalesce(e.created_at, e.occurred_at), coalesce(e.created_at, e.occurred_at) \
           from contact_event_store e"
    )
}

/// A second copy of an event inserts nothing (needs the table's key, which a rebuild's bulk
/// copy into a new table does without: it builds the key after).
pub const KEEP_EXISTING: &str = " on conflict (id) do nothing";

/// The acting user, from the event's metadata. A stored event whose `user_id` is not a uuid is
/// refused as corrupt before it gets here (`EventRow::into_envelope`), so the cast cannot fail on
/// the live path; a rebuild's bulk copy reads the same rows, and would stop on one naming it.
/// (A pattern match per row cost more than the rest of the copy.)
const USER_ID: &str = "(e.metadata->>'user_id')::uuid";
