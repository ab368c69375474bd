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
use event_model::{Contact, ContactCommand, Session};
use platform::db::tenant_tx;
use platform::event_store::EventStore;
use platform::personal::DataKeys;
use rand::Rng;
use uuid::Uuid;

use crate::cache::AggregateCache;
use crate::idempotency::{self, IdempotencySlot};
use crate::writer::{GroupWriter, Grouping, WriteError};

mod command;
mod decide;
mod load;

use command::replayed;
pub use command::{Actor, Answered, Command, CommandError, CommandMeta, Outcome, Replayable};
use decide::{Decided, KeySource};

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
    describe_counter!(
        "commands_repeated_total",
        "Commands that stored nothing because their event was stored already (a message repeated with its channel_message_id)"
    );
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

impl Loaded {
    /// The version of each stream.
    fn versions(&self) -> BTreeMap<Uuid, i64> {
        std::iter::once((self.contact_id, self.contact.version))
            .chain(self.sessions.iter().map(|(id, s)| (*id, s.version)))
            .collect()
    }
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
        if let Some((reply_to, contact, session)) = command.reply() {
            self.check_reply(actor, reply_to, contact, session).await?;
        }
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

    /// A message answers a message of its own contact: another id is a 422 (an unknown contact
    /// or session is left to the command, which answers 404).
    async fn check_reply(
        &self,
        actor: &Actor,
        reply_to: Uuid,
        contact: Option<Uuid>,
        session: Option<Uuid>,
    ) -> Result<(), CommandError> {
        let tenant = actor.tenant_id.as_str();
        let mut tx = tenant_tx(self.store.pool(), tenant).await?;
        let known = EventStore::is_message_of(&mut *tx, tenant, reply_to, contact, session).await?;
        let (stream, kind) = match (contact, session) {
            (Some(c), _) => (c, "contact"),
            (None, s) => (s.unwrap_or_default(), "session"),
        };
        let addressed = EventStore::stream_version(&mut *tx, tenant, stream, kind)
            .await?
            .is_some();
        tx.commit().await?;
        if known || !addressed {
            return Ok(());
        }
        Err(CommandError::Domain(event_model::DomainError::invalid(
            "reply_to",
            "must be the id of a message of this contact",
        )))
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
        let event_ids: Vec<Uuid> = write.events.iter().map(|e| e.event_id).collect();
        match self.writer.write(write).await {
            Ok(()) => {}
            Err(WriteError::Conflict) => return Err(CommandError::Conflict),
            Err(WriteError::EventExists) => {
                return self
                    .already_recorded(actor, outcome.aggregate_id, contact_id, &event_ids)
                    .await
            }
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

    /// The answer to a command whose event is stored already (a message repeated with its
    /// `channel_message_id`): nothing new, the addressed stream's current version, and the
    /// session that holds the message.
    async fn already_recorded(
        &self,
        actor: &Actor,
        target: Uuid,
        contact_id: Uuid,
        event_ids: &[Uuid],
    ) -> Result<Answered, CommandError> {
        let mut tx = tenant_tx(self.store.pool(), &actor.tenant_id).await?;
        let stored = EventStore::stored_streams_of(&mut *tx, &actor.tenant_id, event_ids).await?;
        tx.commit().await?;
        // None stored: the id was taken and released within the attempt; decide again.
        let Some(&(_, session_id)) = stored.first() else {
            return Err(CommandError::Conflict);
        };
        metrics::counter!("commands_repeated_total").increment(1);
        let session_version = self.load::<Session>(actor, session_id).await?.version;
        let version = if target == session_id {
            session_version
        } else if target == contact_id {
            self.load::<Contact>(actor, contact_id).await?.version
        } else {
            self.load::<Session>(actor, target).await?.version
        };
        Ok(Answered::Now(Outcome {
            aggregate_id: target,
            version,
            event_ids: Vec::new(),
            session: Some((session_id, session_version)),
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
}
