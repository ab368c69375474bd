//! Loading the streams a command needs: from the aggregate cache, from the latest snapshot, and
//! the events after either, all inside the command's tenant transaction.

use std::collections::BTreeMap;

use event_model::{Aggregate, AggregateType, Contact, ContactCommand, DomainEvent, Session};
use platform::db::tenant_tx;
use platform::event_store::StoreError;
use platform::personal::{KeySet, StoredSnapshot};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Actor, Command, CommandError, CommandHandler, Loaded};
use crate::cache::Cached;

impl CommandHandler {
    pub(super) async fn current_version(
        &self,
        actor: &Actor,
        command: &Command,
    ) -> Result<i64, CommandError> {
        Ok(match command {
            Command::Contact { contact_id, .. } => {
                self.load::<Contact>(actor, *contact_id).await?.version
            }
            Command::Session { session_id, .. } => {
                self.load::<Session>(actor, *session_id).await?.version
            }
        })
    }

    /// Loads an aggregate of this tenant from the store: its latest snapshot (when of the current
    /// schema), then the events after it. Bypasses the cache.
    pub async fn load<A: Aggregate>(&self, actor: &Actor, id: Uuid) -> Result<A, StoreError> {
        let mut tx = tenant_tx(self.store.pool(), &actor.tenant_id).await?;
        let state = self.restore(&mut tx, actor, id).await?;
        let state = self.fold_newer(&mut tx, actor, id, state).await?;
        tx.commit().await?;
        Ok(state)
    }

    /// Loads an aggregate inside the caller's tenant transaction: from the cached state when
    /// there is one, else from the latest snapshot; then the events after it.
    async fn load_in<A: Cached>(
        &self,
        conn: &mut PgConnection,
        actor: &Actor,
        id: Uuid,
    ) -> Result<A, StoreError> {
        let started = std::time::Instant::now();
        let cached = self.cache.get::<A>(&actor.tenant_id, id);
        metrics::counter!("aggregate_cache_total", "result" => if cached.is_some() { "hit" } else { "miss" })
            .increment(1);
        let state = match cached {
            Some(state) => state,
            None => self.restore(&mut *conn, actor, id).await?,
        };
        let state = self.fold_newer(conn, actor, id, state).await?;
        metrics::histogram!("aggregate_load_seconds", "aggregate" => A::AGGREGATE.as_str())
            .record(started.elapsed().as_secs_f64());
        Ok(state)
    }

    /// The aggregate as of its latest snapshot of the current schema, or a new one.
    async fn restore<A: Aggregate>(
        &self,
        conn: &mut PgConnection,
        actor: &Actor,
        id: Uuid,
    ) -> Result<A, StoreError> {
        let Some(snapshot) = self
            .store
            .latest_snapshot(&mut *conn, &actor.tenant_id, id)
            .await?
        else {
            return Ok(A::default());
        };
        // A snapshot is only a shortcut: one that does not open (its contact forgotten, a seal
        // that was tampered with) is passed over and the state folded from the events.
        let data = match StoredSnapshot::parse(snapshot.snapshot_data) {
            Ok(StoredSnapshot::Plain(data)) => Some(data),
            Ok(sealed @ StoredSnapshot::Sealed { contact_id, .. }) => {
                match self.keys.current(&mut *conn, contact_id).await? {
                    Some(key) => sealed
                        .open(&key, id, snapshot.last_sequence_number)
                        .unwrap_or_else(|e| {
                            tracing::warn!(aggregate_id = %id, error = %e, "a snapshot does not open; folding from the start");
                            None
                        }),
                    None => None,
                }
            }
            Err(e) => {
                tracing::warn!(aggregate_id = %id, error = %e, "a malformed snapshot; folding from the start");
                None
            }
        };
        match data.map(A::decode) {
            Some(Ok(restored)) if restored.version() == snapshot.last_sequence_number => {
                Ok(restored)
            }
            _ => {
                tracing::debug!(aggregate_id = %id, "ignoring a snapshot of another schema or a forgotten contact; folding from the start");
                Ok(A::default())
            }
        }
    }

    /// Opens stored events of one contact's streams with its key (see [`platform::personal`]).
    async fn open_events(
        &self,
        conn: &mut PgConnection,
        events: &[event_model::EventEnvelope],
    ) -> Result<Vec<DomainEvent>, StoreError> {
        let Some(first) = events.first() else {
            return Ok(Vec::new());
        };
        let keys = match self.keys.current(&mut *conn, first.contact_id).await? {
            Some(state) => KeySet::single(first.contact_id, state),
            None => KeySet::default(),
        };
        events
            .iter()
            .map(|envelope| {
                keys.open(envelope)
                    .map(|opened| opened.event)
                    .map_err(|e| StoreError::Corrupt {
                        event_id: envelope.event_id,
                        reason: e.to_string(),
                    })
            })
            .collect()
    }

    /// Folds the stored events after `state`'s version into it.
    async fn fold_newer<A: Aggregate>(
        &self,
        conn: &mut PgConnection,
        actor: &Actor,
        id: Uuid,
        mut state: A,
    ) -> Result<A, StoreError> {
        let events = self
            .store
            .load_stream(
                &mut *conn,
                &actor.tenant_id,
                A::AGGREGATE,
                id,
                state.version(),
            )
            .await?;
        let decoded = self.open_events(conn, &events).await?;
        for (envelope, event) in events.iter().zip(&decoded) {
            state
                .apply_event(envelope, event)
                .map_err(|e| StoreError::Corrupt {
                    event_id: envelope.event_id,
                    reason: e.to_string(),
                })?;
        }
        metrics::histogram!("aggregate_events_folded", "aggregate" => A::AGGREGATE.as_str())
            .record(events.len() as f64);
        Ok(state)
    }

    pub(super) async fn load_for(
        &self,
        conn: &mut PgConnection,
        actor: &Actor,
        command: &Command,
    ) -> Result<Loaded, CommandError> {
        if let Some(loaded) = self.load_cached(conn, actor, command).await? {
            return Ok(loaded);
        }
        match command {
            Command::Contact {
                contact_id,
                command,
            } => {
                let contact: Contact = self.load_in(conn, actor, *contact_id).await?;
                if !contact.exists() && !matches!(command, ContactCommand::Create(_)) {
                    return Err(CommandError::NotFound("contact"));
                }
                let mut sessions = BTreeMap::new();
                for session_id in contact.active_sessions.values() {
                    sessions.insert(
                        *session_id,
                        self.load_in::<Session>(conn, actor, *session_id).await?,
                    );
                }
                Ok(Loaded {
                    contact_id: *contact_id,
                    contact,
                    sessions,
                })
            }
            Command::Session { session_id, .. } => {
                let session: Session = self.load_in(conn, actor, *session_id).await?;
                if !session.exists() {
                    return Err(CommandError::NotFound("session"));
                }
                let contact_id = session.view.contact_id;
                let contact = self.load_in(conn, actor, contact_id).await?;
                Ok(Loaded {
                    contact_id,
                    contact,
                    sessions: BTreeMap::from([(*session_id, session)]),
                })
            }
        }
    }

    /// The streams a command needs as this instance last committed them; `None` when one is
    /// not cached.
    pub(super) fn cached_streams(&self, tenant: &str, command: &Command) -> Option<Loaded> {
        match command {
            Command::Contact { contact_id, .. } => {
                let contact = self.cache.get::<Contact>(tenant, *contact_id)?;
                let sessions = contact
                    .active_sessions
                    .values()
                    .map(|id| Some((*id, self.cache.get::<Session>(tenant, *id)?)))
                    .collect::<Option<BTreeMap<_, _>>>()?;
                Some(Loaded {
                    contact_id: *contact_id,
                    contact,
                    sessions,
                })
            }
            Command::Session { session_id, .. } => {
                let session = self.cache.get::<Session>(tenant, *session_id)?;
                let contact_id = session.view.contact_id;
                let contact = self.cache.get::<Contact>(tenant, contact_id)?;
                Some(Loaded {
                    contact_id,
                    contact,
                    sessions: BTreeMap::from([(*session_id, session)]),
                })
            }
        }
    }

    /// The streams a command needs, when all of them are cached: one statement reads what was
    /// appended after the cached versions (usually nothing). `None` when one is not cached.
    async fn load_cached(
        &self,
        conn: &mut PgConnection,
        actor: &Actor,
        command: &Command,
    ) -> Result<Option<Loaded>, CommandError> {
        let started = std::time::Instant::now();
        let tenant = actor.tenant_id.as_str();
        let Some(Loaded {
            contact_id,
            mut contact,
            mut sessions,
        }) = self.cached_streams(tenant, command)
        else {
            return Ok(None);
        };
        self.fold_newer_cached(conn, tenant, contact_id, &mut contact, &mut sessions)
            .await?;
        if matches!(command, Command::Contact { .. }) {
            self.sync_active_sessions(conn, actor, &contact, &mut sessions)
                .await?;
        }
        metrics::histogram!("aggregate_load_seconds", "aggregate" => "cached")
            .record(started.elapsed().as_secs_f64());
        Ok(Some(Loaded {
            contact_id,
            contact,
            sessions,
        }))
    }

    /// Folds into the cached streams what was appended after their cached versions.
    async fn fold_newer_cached(
        &self,
        conn: &mut PgConnection,
        tenant: &str,
        contact_id: Uuid,
        contact: &mut Contact,
        sessions: &mut BTreeMap<Uuid, Session>,
    ) -> Result<(), StoreError> {
        let streams: Vec<(AggregateType, Uuid, i64)> =
            std::iter::once((AggregateType::Contact, contact_id, contact.version))
                .chain(
                    sessions
                        .iter()
                        .map(|(id, s)| (AggregateType::Session, *id, s.version)),
                )
                .collect();
        metrics::counter!("aggregate_cache_total", "result" => "hit")
            .increment(streams.len() as u64);
        let newer = self
            .store
            .load_streams(&mut *conn, tenant, &streams)
            .await?;
        let decoded = self.open_events(conn, &newer).await?;
        for (envelope, event) in newer.iter().zip(&decoded) {
            let folded = if envelope.aggregate_id == contact_id {
                contact.apply_event(envelope, event)
            } else if let Some(session) = sessions.get_mut(&envelope.aggregate_id) {
                session.apply_event(envelope, event)
            } else {
                continue; // not asked for
            };
            folded.map_err(|e| StoreError::Corrupt {
                event_id: envelope.event_id,
                reason: e.to_string(),
            })?;
        }
        Ok(())
    }

    /// Makes the cached sessions the contact's active ones: drops the ended, loads the new.
    async fn sync_active_sessions(
        &self,
        conn: &mut PgConnection,
        actor: &Actor,
        contact: &Contact,
        sessions: &mut BTreeMap<Uuid, Session>,
    ) -> Result<(), StoreError> {
        // Sessions opened or ended since the cached state: the contact's active ones count.
        sessions.retain(|id, _| contact.active_sessions.values().any(|s| s == id));
        for id in contact.active_sessions.values() {
            if !sessions.contains_key(id) {
                let session = self.load_in::<Session>(conn, actor, *id).await?;
                sessions.insert(*id, session);
            }
        }
        Ok(())
    }
}
