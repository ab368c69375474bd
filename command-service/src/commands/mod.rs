//! The command path: find the streams a command touches (the aggregate cache, or the store:
//! `commands/load.rs`), decide with the pure domain, and hand what it decided to store
//! (events, outbox rows, a new data key, due snapshots, the idempotency record) to the group
//! writer ([`crate::writer`]), which commits it with the writes queued beside it.
//!
//! Concurrency is optimistic: each stream is appended at the version it was decided on, the
//! unique `(aggregate_id, sequence_number)` refuses a writer that lost the race, and the streams a
//! command only read must still be at the versions it read. With `If-Match` a lost race is a 412;
//! without, the command is loaded from the store and decided again, a bounded number of times,
//! then 409.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use event_model::{
    decide_contact, decide_session, AggregateType, Contact, ContactCommand, ContactScope, Context,
    DomainError, DomainEvent, PendingEvent, Session, SessionCommand, Snapshot,
};
use platform::crypto::DataKey;
use platform::db::tenant_tx;
use platform::event_store::{EventStore, NewEvent, StoreError};
use platform::personal::{self, DataKeys, KeyState, NewKey};
use rand::Rng;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::cache::AggregateCache;
use crate::idempotency::{self, IdempotencySlot, StoredResponse};
use crate::writer::{GroupWriter, Grouping, Write, WriteError};

mod load;

/// Who a command acts for: the project and tenant, and the calling user (none for the system's
/// own commands, e.g. the timeout sweeper).
#[derive(Debug, Clone)]
pub struct Actor {
    pub tenant_id: String,
    pub project_id: Uuid,
    pub user_id: Option<Uuid>,
    pub session_timeout: event_model::values::SessionTimeout,
}

/// A command whose answer is kept for its `Idempotency-Key`: the key, and how an outcome becomes
/// the HTTP answer that is stored and replayed.
#[derive(Debug, Clone, Copy)]
pub struct Replayable<'a> {
    pub slot: &'a IdempotencySlot,
    pub render: fn(&Outcome) -> StoredResponse,
}

/// Per-request metadata carried into every event.
#[derive(Debug, Clone, Copy)]
pub struct CommandMeta {
    pub correlation_id: Uuid,
    /// The id of this command: every event it produces has it as `causation_id`.
    pub causation_id: Uuid,
    pub if_match: Option<i64>,
}

#[derive(Debug, Clone)]
pub enum Command {
    Contact {
        contact_id: Uuid,
        command: ContactCommand,
    },
    Session {
        session_id: Uuid,
        command: SessionCommand,
    },
}

impl Command {
    /// A stable name for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Contact { command, .. } => match command {
                ContactCommand::Create(_) => "create_contact",
                ContactCommand::UpdateProfile(_) => "update_contact",
                ContactCommand::AddTag { .. } => "add_tag",
                ContactCommand::RemoveTag { .. } => "remove_tag",
                ContactCommand::SetProfilePicture { .. } => "set_profile_picture",
                ContactCommand::Delete { .. } => "delete_contact",
                ContactCommand::Forget { .. } => "forget_contact",
                ContactCommand::StartSession { .. } => "start_session",
                ContactCommand::RecordMessage { .. } => "record_inbound_message",
            },
            Self::Session { command, .. } => match command {
                SessionCommand::RecordMessage(_) => "record_session_message",
                SessionCommand::AssignAgent { .. } => "assign_agent",
                SessionCommand::Summarize(_) => "summarize_session",
                SessionCommand::SetOutcome(_) => "set_outcome",
                SessionCommand::End { .. } => "end_session",
                SessionCommand::EndIfIdle => "end_idle_session",
            },
        }
    }

    fn target(&self) -> Uuid {
        match self {
            Self::Contact { contact_id, .. } => *contact_id,
            Self::Session { session_id, .. } => *session_id,
        }
    }
}

/// What a command answers: what it did now, or the answer its `Idempotency-Key` got before.
#[derive(Debug, Clone, PartialEq)]
pub enum Answered {
    Now(Outcome),
    Replayed(StoredResponse),
}

impl Answered {
    /// What the command did now; `None` for a replayed answer.
    pub fn now(self) -> Option<Outcome> {
        match self {
            Self::Now(outcome) => Some(outcome),
            Self::Replayed(_) => None,
        }
    }
}

/// What a command did: the addressed aggregate's new version, and the session it touched (a
/// message on a contact goes to, or opens, a session).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub aggregate_id: Uuid,
    pub version: i64,
    pub event_ids: Vec<Uuid>,
    pub session: Option<(Uuid, i64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("no such {0} in this project")]
    NotFound(&'static str),
    #[error("the aggregate is at version {current}")]
    PreconditionFailed { current: i64 },
    #[error("the aggregate kept changing under the command; retry")]
    Conflict,
    #[error("the Idempotency-Key was used with another request")]
    IdempotencyMismatch,
    #[error(transparent)]
    Store(StoreError),
}

/// The answer an `Idempotency-Key` already stands for: its first answer, or a refusal when the
/// key came with another request.
fn replayed(recorded: idempotency::Recorded) -> Result<Answered, CommandError> {
    match recorded {
        idempotency::Recorded::Same(answer) => Ok(Answered::Replayed(answer)),
        idempotency::Recorded::Different => Err(CommandError::IdempotencyMismatch),
    }
}

impl From<StoreError> for CommandError {
    fn from(e: StoreError) -> Self {
        match e {
            // A lost race is not an infrastructure failure: it is retried, or becomes 412/409.
            StoreError::Conflict => Self::Conflict,
            other => Self::Store(other),
        }
    }
}

impl From<personal::PersonalError> for CommandError {
    fn from(e: personal::PersonalError) -> Self {
        Self::Store(StoreError::Personal(e))
    }
}

impl From<sqlx::Error> for CommandError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::Database(e))
    }
}

pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The `# HELP` text of the families recorded here (`promtool check metrics` wants one on each).
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_histogram, Unit};
    describe_counter!(
        "commands_total",
        "Commands handled, by command and outcome (ok, refused, conflict, replayed, error)"
    );
    describe_counter!(
        "commands_retried_total",
        "Command attempts retried after a version conflict, by command"
    );
    describe_counter!(
        "aggregate_cache_total",
        "Streams a command found in the aggregate cache (hit) or loaded from the store (miss)"
    );
    describe_histogram!(
        "aggregate_load_seconds",
        Unit::Seconds,
        "Time to load an aggregate for a command, by aggregate (cached: from the cache)"
    );
    describe_histogram!(
        "aggregate_events_folded",
        Unit::Count,
        "Events folded to load an aggregate (after its snapshot), by aggregate"
    );
    describe_counter!("snapshots_written_total", "Aggregate snapshots written");
}

pub fn system_clock() -> Clock {
    Arc::new(Utc::now)
}

#[derive(Clone)]
pub struct CommandHandler {
    store: EventStore,
    clock: Clock,
    snapshot_every: i64,
    max_attempts: u32,
    cache: Arc<AggregateCache>,
    keys: DataKeys,
    writer: GroupWriter,
}

/// The streams a command read, at the versions it read them.
struct Loaded {
    contact_id: Uuid,
    contact: Contact,
    sessions: BTreeMap<Uuid, Session>,
}

/// A command decided: what it writes, the states it leaves once written, and its answer.
struct Decided {
    /// The loaded streams with the new events folded in.
    loaded: Loaded,
    write: Write,
    outcome: Outcome,
    /// A key made for this command: cached once its write has committed.
    new_key: Option<DataKey>,
}

/// Where a decision finds its contact's data key.
enum KeySource<'c> {
    /// The keys this instance saw committed; nothing else.
    Cache,
    /// The cache, else `contact_data_keys` in the command's transaction.
    Store(&'c mut PgConnection),
}

impl CommandHandler {
    pub fn new(
        store: EventStore,
        keys: DataKeys,
        clock: Clock,
        snapshot_every: i64,
        max_attempts: u32,
    ) -> Self {
        Self {
            writer: GroupWriter::start(store.pool().clone(), Grouping::DEFAULT),
            store,
            clock,
            snapshot_every: snapshot_every.max(1),
            max_attempts: max_attempts.max(1),
            cache: Arc::new(AggregateCache::new(0)),
            keys,
        }
    }

    /// Stores the commands' writes through `grouping`'s writers (see [`crate::writer`]).
    pub fn with_grouping(mut self, grouping: Grouping) -> Self {
        self.writer = GroupWriter::start(self.store.pool().clone(), grouping);
        self
    }

    pub fn keys(&self) -> &DataKeys {
        &self.keys
    }

    /// Keeps up to `capacity` aggregates of each type as last committed (see [`crate::cache`]).
    pub fn with_cache(mut self, capacity: usize) -> Self {
        self.cache = Arc::new(AggregateCache::new(capacity));
        self
    }

    /// Runs a command to completion: decides, appends, retries lost races.
    ///
    /// With `replayable`, the answer is recorded for its `Idempotency-Key` in the command's
    /// transaction, and a key already answered is replayed (see [`crate::idempotency`]).
    #[tracing::instrument(skip_all, fields(target = %command.target(), tenant = %actor.tenant_id), err(level = "debug"))]
    pub async fn execute(
        &self,
        actor: &Actor,
        meta: CommandMeta,
        command: Command,
        replayable: Option<Replayable<'_>>,
    ) -> Result<Answered, CommandError> {
        let name = command.name();
        let before = match replayable {
            Some(Replayable { slot, .. }) => self.recorded(actor, slot).await?,
            None => None,
        };
        let result = match before {
            Some(recorded) => replayed(recorded),
            None => {
                self.execute_with_retries(actor, meta, command, replayable)
                    .await
            }
        };
        let outcome = match &result {
            Ok(Answered::Now(_)) => "ok",
            Ok(Answered::Replayed(_)) => "replayed",
            Err(CommandError::Conflict) => "conflict",
            Err(CommandError::Store(_)) => "error",
            Err(_) => "refused",
        };
        metrics::counter!("commands_total", "command" => name, "outcome" => outcome).increment(1);
        result
    }

    /// What `slot`'s key already stands for in the actor's project, if anything.
    async fn recorded(
        &self,
        actor: &Actor,
        slot: &IdempotencySlot,
    ) -> Result<Option<idempotency::Recorded>, CommandError> {
        let mut tx = tenant_tx(self.store.pool(), &actor.tenant_id).await?;
        let recorded = idempotency::find(&mut *tx, actor.project_id, slot).await?;
        tx.commit().await?;
        Ok(recorded)
    }

    async fn execute_with_retries(
        &self,
        actor: &Actor,
        meta: CommandMeta,
        command: Command,
        replayable: Option<Replayable<'_>>,
    ) -> Result<Answered, CommandError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            // A lost race means the cache was behind (or a twin write won): the next attempts
            // decide on what the store holds.
            let trust_cache = attempt == 1;
            match self
                .attempt(actor, meta, command.clone(), replayable, trust_cache)
                .await
            {
                Err(CommandError::Conflict) if meta.if_match.is_some() => {
                    let current = self.current_version(actor, &command).await?;
                    if Some(current) != meta.if_match || attempt >= self.max_attempts {
                        return Err(CommandError::PreconditionFailed { current });
                    }
                    // The addressed stream is as the caller expects; another stream the command
                    // read moved on: decide again.
                }
                Err(CommandError::Conflict) if attempt < self.max_attempts => {
                    metrics::counter!("commands_retried_total", "command" => command.name())
                        .increment(1);
                    // Jittered backoff so racing writers do not collide again in lockstep.
                    let wait = rand::rng().random_range(1..=(4u64 << attempt.min(5)));
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                }
                other => return other,
            }
        }
    }

    async fn attempt(
        &self,
        actor: &Actor,
        meta: CommandMeta,
        command: Command,
        replayable: Option<Replayable<'_>>,
        trust_cache: bool,
    ) -> Result<Answered, CommandError> {
        let on_cache = if trust_cache {
            self.decide_on_cache(actor, meta, &command, replayable)
                .await
        } else {
            None
        };
        let decided = match on_cache {
            Some(decided) => decided,
            None => {
                // The loads and the decision in one transaction in the caller's tenant
                // (row-level security shows this tenant's streams only). It only reads, so its
                // commit flushes no WAL.
                let mut tx = tenant_tx(self.store.pool(), &actor.tenant_id).await?;
                let loaded = self.load_for(&mut tx, actor, &command).await?;
                let decided = self
                    .decide(
                        &mut KeySource::Store(&mut tx),
                        loaded,
                        actor,
                        meta,
                        command,
                        replayable,
                    )
                    .await?
                    .expect("the store answers every key");
                tx.commit().await?;
                decided
            }
        };
        self.store_decided(actor, decided, replayable.map(|r| r.slot))
            .await
    }

    /// Decides on the cached states alone, with no round trip to the database, when every
    /// stream the command needs is cached (and its contact's key, if it seals anything). The
    /// write then proves the cache was current: it appends right after the cached versions and
    /// checks the streams it only read (see [`crate::writer`]), and a stale entry makes it a
    /// lost race, decided again on what the store holds. `None` when the command must be
    /// decided on the store: something is not cached, or the cached states decide nothing or a
    /// refusal, which stale states could cause (a tag already there, a session already ended,
    /// an `If-Match` that the cache calls stale).
    async fn decide_on_cache(
        &self,
        actor: &Actor,
        meta: CommandMeta,
        command: &Command,
        replayable: Option<Replayable<'_>>,
    ) -> Option<Decided> {
        if matches!(
            command,
            Command::Contact {
                command: ContactCommand::Forget { .. },
                ..
            }
        ) {
            // An erasure is decided on what the store holds, whatever the cache says.
            return None;
        }
        let loaded = self.cached_streams(&actor.tenant_id, command)?;
        metrics::counter!("aggregate_cache_total", "result" => "hit")
            .increment(1 + loaded.sessions.len() as u64);
        let decided = self
            .decide(
                &mut KeySource::Cache,
                loaded,
                actor,
                meta,
                command.clone(),
                replayable,
            )
            .await
            .ok()??;
        (!decided.write.events.is_empty()).then_some(decided)
    }

    /// Stores a decided command's write and, once it has committed, caches what it left.
    async fn store_decided(
        &self,
        actor: &Actor,
        decided: Decided,
        idempotency: Option<&IdempotencySlot>,
    ) -> Result<Answered, CommandError> {
        let Decided {
            loaded,
            write,
            outcome,
            new_key,
        } = decided;
        let (contact_id, forgotten) = (write.contact_id, write.forget);
        if forgotten {
            self.keys.evict(contact_id);
        }
        match self.writer.write(write).await {
            Ok(()) => {}
            Err(WriteError::Conflict) => return Err(CommandError::Conflict),
            Err(WriteError::IdempotencyTaken) => {
                // A twin request with the same key won the race: answer what it answered.
                let slot = idempotency.expect("only a write with a key records one");
                return self
                    .recorded(actor, slot)
                    .await?
                    .map_or(Err(CommandError::Conflict), replayed);
            }
            Err(WriteError::Store(e)) => return Err(e.into()),
        }
        self.remember(actor, &loaded);
        if let Some(key) = new_key {
            self.keys.remember(contact_id, &key);
        }
        if forgotten {
            self.keys.evict(contact_id);
        }
        Ok(Answered::Now(outcome))
    }

    /// Decides `command` on `loaded`: the write it makes, and the answer once that is stored.
    /// `None` when the contact's key is needed and `keys` cannot give it (only the cache can
    /// fail to).
    async fn decide(
        &self,
        keys: &mut KeySource<'_>,
        mut loaded: Loaded,
        actor: &Actor,
        meta: CommandMeta,
        command: Command,
        replayable: Option<Replayable<'_>>,
    ) -> Result<Option<Decided>, CommandError> {
        let target = command.target();
        let current = match &command {
            Command::Contact { .. } => loaded.contact.version,
            Command::Session { session_id, .. } => loaded.sessions[session_id].version,
        };
        if let Some(expected) = meta.if_match {
            if expected != current {
                return Err(CommandError::PreconditionFailed { current });
            }
        }
        let ctx = Context {
            now: event_model::values::instant((self.clock)()),
            session_timeout: actor.session_timeout,
        };
        let pending = match command {
            Command::Contact {
                contact_id,
                command,
            } => decide_contact(
                ContactScope {
                    contact_id,
                    contact: &loaded.contact,
                    sessions: &loaded.sessions,
                },
                command,
                &ctx,
            )?,
            Command::Session {
                session_id,
                command,
            } => decide_session(
                session_id,
                &loaded.sessions[&session_id],
                &loaded.contact,
                command,
                &ctx,
            )?,
        };

        let before: BTreeMap<Uuid, i64> =
            std::iter::once((loaded.contact_id, loaded.contact.version))
                .chain(loaded.sessions.iter().map(|(id, s)| (*id, s.version)))
                .collect();
        // The contact's data key, when something is to be sealed with it (it is made with the
        // contact, or on first need for a contact of the previous release).
        let needs_key = pending
            .iter()
            .any(|p| !event_model::personal::fields(p.event.event_type()).is_empty());
        let mut sealing = None;
        if needs_key {
            let Some(key) = self.sealing_key(keys, loaded.contact_id).await? else {
                return Ok(None);
            };
            sealing = Some(key);
        }
        let events = self.sequence(
            actor,
            meta,
            &ctx,
            &mut loaded,
            &pending,
            sealing.as_ref().map(|(key, _)| key),
        )?;
        let snapshots_due = self.due_snapshots(&loaded, &before);
        if !snapshots_due.is_empty() && !events.is_empty() && sealing.is_none() {
            let Some(key) = self.sealing_key(keys, loaded.contact_id).await? else {
                return Ok(None);
            };
            sealing = Some(key);
        }
        let outcome = outcome_of(target, &loaded, &events, current);
        let forget = pending.iter().any(|p| {
            matches!(
                p.event,
                DomainEvent::Contact(event_model::ContactEvent::Forgotten { .. })
            )
        });
        let snapshots = match (&sealing, events.is_empty()) {
            (Some((key, _)), false) => snapshots_due
                .into_iter()
                .map(|(id, state, version)| {
                    let sealed =
                        personal::seal_snapshot(key, loaded.contact_id, id, version, &state);
                    (id, version, sealed)
                })
                .collect(),
            _ => Vec::new(),
        };
        let (new_key, stored_key) = match sealing {
            Some((key, Some(new))) => (Some(key), Some(new)),
            _ => (None, None),
        };
        // The streams the decision read and writes nothing to: the write checks that they are
        // still at these versions.
        let read_only = before
            .into_iter()
            .filter(|(id, version)| *version > 0 && !events.iter().any(|e| e.aggregate_id == *id))
            .collect();
        let write = Write {
            tenant_id: actor.tenant_id.clone(),
            contact_id: loaded.contact_id,
            new_key: stored_key,
            read_only,
            events,
            snapshots,
            forget,
            idempotency: replayable
                .map(|r| (actor.project_id, r.slot.clone(), (r.render)(&outcome))),
        };
        Ok(Some(Decided {
            loaded,
            write,
            outcome,
            new_key,
        }))
    }

    /// Caches the states a command committed (only streams that exist).
    fn remember(&self, actor: &Actor, loaded: &Loaded) {
        if loaded.contact.exists() {
            self.cache
                .put(&actor.tenant_id, loaded.contact_id, &loaded.contact);
        }
        for (id, session) in &loaded.sessions {
            if session.exists() {
                self.cache.put(&actor.tenant_id, *id, session);
            }
        }
    }

    /// Gives each decided event its place in its stream, folding it into the loaded state so that
    /// snapshots and the answer see the new versions.
    fn sequence(
        &self,
        actor: &Actor,
        meta: CommandMeta,
        ctx: &Context,
        loaded: &mut Loaded,
        pending: &[PendingEvent],
        sealing: Option<&DataKey>,
    ) -> Result<Vec<NewEvent>, CommandError> {
        let traceparent = platform::telemetry::traceparent(&tracing::Span::current());
        pending
            .iter()
            .map(|p| {
                let sequence_number = match &p.event {
                    DomainEvent::Contact(e) => {
                        let next = loaded.contact.version + 1;
                        loaded.contact.apply(next, e, ctx.now);
                        next
                    }
                    DomainEvent::Session(e) => {
                        let session = loaded.sessions.entry(p.aggregate_id).or_default();
                        let next = session.version + 1;
                        session.apply(next, e);
                        next
                    }
                };
                let event_id = Uuid::now_v7();
                let data = match sealing {
                    Some(key) => personal::seal_event(key, loaded.contact_id, event_id, &p.event)?,
                    // Nothing personal in these events (see `needs_key` in `decide`).
                    None => p
                        .event
                        .payload()
                        .into_stored()
                        .map_err(personal::PersonalError::from)?,
                };
                Ok(NewEvent {
                    event_id,
                    aggregate_id: p.aggregate_id,
                    aggregate_type: p.event.aggregate_type(),
                    event_type: p.event.event_type(),
                    event_version: p.event.event_version(),
                    sequence_number,
                    data,
                    contact_id: loaded.contact_id,
                    user_id: actor.user_id,
                    occurred_at: ctx.now,
                    tenant_id: actor.tenant_id.clone(),
                    project_id: actor.project_id,
                    causation_id: Some(meta.causation_id),
                    correlation_id: Some(meta.correlation_id),
                    traceparent: traceparent.clone(),
                })
            })
            .collect()
    }

    /// The key to seal a contact's new events and snapshots with: its stored key, or a new one
    /// that the write stores (a new contact, or one of the previous release). `None` when
    /// `keys` is the cache and does not hold it.
    async fn sealing_key(
        &self,
        keys: &mut KeySource<'_>,
        contact_id: Uuid,
    ) -> Result<Option<(DataKey, Option<NewKey>)>, CommandError> {
        let state = match keys {
            KeySource::Cache => return Ok(self.keys.cached(contact_id).map(|key| (key, None))),
            KeySource::Store(conn) => self.keys.current(conn, contact_id).await?,
        };
        match state {
            Some(KeyState::Active(key)) => Ok(Some((key, None))),
            None => {
                let (key, new) = self.keys.make(contact_id);
                Ok(Some((key, Some(new))))
            }
            Some(KeyState::Destroyed) => Err(CommandError::Store(StoreError::Corrupt {
                event_id: Uuid::nil(),
                reason: format!(
                    "contact {contact_id} was forgotten, yet a command decided personal data for it"
                ),
            })),
        }
    }

    /// A snapshot (unsealed state) for every stream that crossed a multiple of `snapshot_every`.
    fn due_snapshots(
        &self,
        loaded: &Loaded,
        before: &BTreeMap<Uuid, i64>,
    ) -> Vec<(Uuid, Value, i64)> {
        let due = |id: &Uuid, version: i64| {
            let old = before.get(id).copied().unwrap_or(0);
            version > old && version / self.snapshot_every > old / self.snapshot_every
        };
        let mut snapshots = Vec::new();
        if due(&loaded.contact_id, loaded.contact.version) {
            snapshots.push((
                loaded.contact_id,
                loaded.contact.encode(),
                loaded.contact.version,
            ));
        }
        for (id, session) in &loaded.sessions {
            if due(id, session.version) {
                snapshots.push((*id, session.encode(), session.version));
            }
        }
        snapshots
    }
}

fn outcome_of(target: Uuid, loaded: &Loaded, events: &[NewEvent], unchanged: i64) -> Outcome {
    let version_of = |id: Uuid| {
        if id == loaded.contact_id {
            Some(loaded.contact.version)
        } else {
            loaded.sessions.get(&id).map(|s| s.version)
        }
    };
    // The session a contact-route message went to (or opened) is the last session event's.
    let session = events
        .iter()
        .rev()
        .find(|e| e.aggregate_type == AggregateType::Session)
        .map(|e| e.aggregate_id)
        .or_else(|| loaded.sessions.contains_key(&target).then_some(target))
        .and_then(|id| version_of(id).map(|v| (id, v)));
    Outcome {
        aggregate_id: target,
        version: version_of(target).unwrap_or(unchanged),
        event_ids: events.iter().map(|e| e.event_id).collect(),
        session,
    }
}
