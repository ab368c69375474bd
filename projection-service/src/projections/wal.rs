//! Where PostgreSQL's WAL stands, for acks that wait for a commit to be on disk.

use sqlx::PgConnection;

/// Whether an unlocked write's commit waits for its WAL to reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// As every other commit of the system: durable when the statement returns.
    Durable,
    /// Visible at once, on disk within PostgreSQL's WAL writer delay (`synchronous_commit` off
    /// for this statement alone). The caller must not ack its messages before [`Wal`] says the
    /// WAL is flushed past a position read after the commit: a database crash in between loses
    /// the batch, and the broker then delivers it again.
    Deferred,
}

/// Two WAL positions (bytes from the start) read together: how far WAL has been written, and
/// how far it is on disk. Any commit that returned before they were read ends at or before
/// `inserted`, and is on disk once a `flushed` read later reaches that.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wal {
    pub inserted: i64,
    pub flushed: i64,
}

/// SQL: the two columns of a [`Wal`], `wal_inserted` and `wal_flushed`.
pub(super) const WAL_SQL: &str =
    "(pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint as wal_inserted, \
     (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::bigint as wal_flushed";

/// Where the WAL stands now (see [`Wal`]).
pub async fn wal(conn: &mut PgConnection) -> Result<Wal, sqlx::Error> {
    let (inserted, flushed) = sqlx::query_as(&format!("select {WAL_SQL}"))
        .fetch_one(conn)
        .await?;
    Ok(Wal { inserted, flushed })
}

/// Flushes the WAL written so far: a commit that waits for the disk, of a transaction that
/// writes one record (a logical message no one decodes; a transaction that writes nothing
/// commits without a flush). When it returns, every commit before it is on disk.
pub async fn flush(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query!("select pg_logical_emit_message(true, 'ventros.flush', '')::text")
        .fetch_one(conn)
        .await?;
    Ok(())
}
