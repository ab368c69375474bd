-- 0004_event_store: the write side and the delivery bookkeeping (inventory sections 1.8, 1.9).
-- contact_event_store holds the events of both aggregates (contact, session); contact_snapshots
-- shortens loads; outbox_events is the transactional outbox the relay publishes to jetstream;
-- processed_events makes projection batches idempotent; domain_event_logs is the audit read model.
-- Additions to the inventory (from DESIGN.md): contact_event_store.position and transaction_id,
-- outbox_events.seq, and the outbox notify trigger.

-- contact_event_store ----------------------------------------------------------------------------

create table contact_event_store (
    id              uuid primary key default gen_random_uuid(),
    aggregate_id    uuid not null,
    -- the inventory's default 'contact' kept; the check covers both event-sourced aggregates.
    aggregate_type  varchar(50) default 'contact'
                    constraint contact_event_store_aggregate_type_check check (aggregate_type in ('contact', 'session')),
    event_type      varchar(100) not null,
    event_version   varchar(10) default 'v1',
    -- starts at 1 per aggregate, no gaps; the unique constraint below is the concurrency guard.
    sequence_number bigint not null,
    event_data      jsonb not null,
    metadata        jsonb,
    occurred_at     timestamp not null,
    created_at      timestamp default now(),
    tenant_id       varchar(255) not null,
    project_id      uuid,
    causation_id    uuid,
    correlation_id  uuid,
    -- global order for the replay tool and catch-up reads. Handed out at insert, not at commit,
    -- so a lower position can become visible after a higher one: see transaction_id.
    position        bigint generated always as identity,
    -- the writing transaction. A reader walking position reads only rows with
    -- transaction_id < pg_snapshot_xmin(pg_current_snapshot()) (every transaction below that is
    -- finished), so it never steps past an event whose transaction is still open.
    transaction_id  xid8 not null default pg_current_xact_id(),
    -- command-service maps a violation of this constraint, by name, to a concurrency conflict.
    -- Its index also serves loads (aggregate_id = $1 and sequence_number > $2), so the
    -- inventory's (aggregate_id, sequence_number) index is this one, not a second copy.
    constraint contact_event_store_aggregate_seq_key unique (aggregate_id, sequence_number),
    constraint contact_event_store_position_key unique (position)
);

create index contact_event_store_event_type_occurred_at_idx on contact_event_store (event_type, occurred_at desc);
create index contact_event_store_tenant_id_idx on contact_event_store (tenant_id);
create index contact_event_store_correlation_id_idx on contact_event_store (correlation_id);
-- jsonb_path_ops: smaller and cheaper to maintain than jsonb_ops, and enough for the containment
-- (@>) queries an audit or support lookup makes. It sits on the hot append path; a later
-- benchmark decides whether it stays.
create index contact_event_store_event_data_idx on contact_event_store using gin (event_data jsonb_path_ops);

-- contact_snapshots ------------------------------------------------------------------------------

create table contact_snapshots (
    id                   uuid primary key default gen_random_uuid(),
    aggregate_id         uuid not null,
    -- carries its own schema version; a snapshot of another version is ignored by the loader.
    snapshot_data        jsonb not null,
    last_sequence_number bigint not null,
    created_at           timestamp default now(),
    tenant_id            varchar(255) not null,
    -- the inventory also lists an index (aggregate_id, last_sequence_number desc): a b-tree is
    -- read backwards just as well, so "latest snapshot of an aggregate"
    -- (order by last_sequence_number desc limit 1) uses this constraint's index; no second copy.
    constraint contact_snapshots_aggregate_seq_key unique (aggregate_id, last_sequence_number)
);

create index contact_snapshots_tenant_created_at_idx on contact_snapshots (tenant_id, created_at desc);

-- outbox_events ----------------------------------------------------------------------------------

create table outbox_events (
    id             uuid primary key default gen_random_uuid(),
    -- the event's id; also the jetstream Nats-Msg-Id (broker-side de-duplication).
    event_id       uuid not null,
    aggregate_id   uuid not null,
    aggregate_type varchar(100) not null,
    event_type     varchar(100) not null,
    event_version  varchar(20) default 'v1',
    event_data     jsonb not null,
    metadata       jsonb default '{}',
    tenant_id      varchar(100),
    project_id     uuid,
    created_at     timestamp default now(),
    processed_at   timestamp,
    status         varchar(20) default 'pending'
                   constraint outbox_events_status_check check (status in ('pending', 'processing', 'processed', 'failed')),
    retry_count    bigint default 0,
    last_error     text,
    last_retry_at  timestamp,
    deleted_at     timestamp,
    -- the relay's insertion order (created_at can tie and is not monotonic across sessions).
    seq            bigint generated always as identity,
    constraint outbox_events_event_id_key unique (event_id),
    constraint outbox_events_seq_key unique (seq)
);

-- the relay's batch query: pending rows in insertion order. Partial, so it stays as small as the
-- backlog.
create index outbox_events_pending_idx on outbox_events (seq) where status in ('pending', 'processing');
-- the inventory lists (status, created_at) both as a plain index (table section) and as this
-- partial one (section 4); the partial form is taken, as processed rows are never looked up by it.
create index outbox_events_status_created_at_idx on outbox_events (status, created_at)
    where status in ('pending', 'processing');
create index outbox_events_aggregate_idx on outbox_events (aggregate_type, aggregate_id);
create index outbox_events_tenant_id_idx on outbox_events (tenant_id);
create index outbox_events_event_type_idx on outbox_events (event_type);
create index outbox_events_retry_idx on outbox_events (retry_count, last_retry_at);
create index outbox_events_metadata_idx on outbox_events using gin (metadata);
-- the inventory lists "correlation_id" and "saga_type" indexes, but the table has no such
-- columns: they are keys of metadata (inventory section 6.4, saga pattern), so the indexes are on
-- those keys.
create index outbox_events_correlation_id_idx on outbox_events ((metadata->>'correlation_id'));
create index outbox_events_saga_type_idx on outbox_events ((metadata->>'saga_type'));

-- wakes the relay (LISTEN outbox_events). The payload is empty: the relay reads the rows from the
-- table, so it needs to know only that there is something to read. NOTIFY is delivered at commit,
-- so the relay never wakes for rows it cannot see yet.
create function notify_outbox_event() returns trigger
language plpgsql
as $$
begin
    perform pg_notify('outbox_events', '');
    return null;
end;
$$;

-- for each statement, not for each row: one wake-up per inserting statement (and postgres folds
-- identical notifications of one transaction into one), instead of one per event.
create trigger outbox_events_notify
    after insert on outbox_events
    for each statement
    execute function notify_outbox_event();

-- processed_events -------------------------------------------------------------------------------

create table processed_events (
    id                     bigserial primary key,
    event_id               uuid not null,
    -- the projection's name (contacts, sessions, domain_event_logs).
    consumer_name          varchar(100) not null,
    processed_at           timestamp default now(),
    processing_duration_ms bigint,
    constraint processed_events_event_consumer_key unique (event_id, consumer_name)
);

create index processed_events_processed_at_idx on processed_events (processed_at);
create index processed_events_consumer_name_idx on processed_events (consumer_name);

-- domain_event_logs ------------------------------------------------------------------------------

create table domain_event_logs (
    -- the projection writes the event's own id here (one row per event); the default only serves
    -- rows written by other means.
    id             uuid primary key default gen_random_uuid(),
    event_type     text not null,
    aggregate_id   uuid not null,
    aggregate_type text not null,
    tenant_id      text not null,
    project_id     uuid,
    -- the acting user (from the event's metadata).
    user_id        uuid,
    payload        jsonb,
    occurred_at    timestamp not null,
    published_at   timestamp not null,
    created_at     timestamp,
    deleted_at     timestamp
);

create index domain_event_logs_aggregate_id_idx on domain_event_logs (aggregate_id);
create index domain_event_logs_aggregate_type_idx on domain_event_logs (aggregate_type);
create index domain_event_logs_event_type_idx on domain_event_logs (event_type);
create index domain_event_logs_tenant_id_idx on domain_event_logs (tenant_id);
create index domain_event_logs_project_id_idx on domain_event_logs (project_id);
create index domain_event_logs_user_id_idx on domain_event_logs (user_id);
create index domain_event_logs_occurred_at_idx on domain_event_logs (occurred_at);
create index domain_event_logs_published_at_idx on domain_event_logs (published_at);
create index domain_event_logs_deleted_at_idx on domain_event_logs (deleted_at);
