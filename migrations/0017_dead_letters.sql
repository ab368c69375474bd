-- 0017_dead_letters: events a projection worker could not apply ("poison": an unknown type or
-- version, a payload that does not fit), parked with the error instead of stalling their
-- partition. Not in the inventory: an addition of the event-sourced core, like idempotency_keys.
--
-- An event is parked together with the events of its partition key (its contact, and the
-- contact's sessions) that arrive behind it, since their order forbids applying them first; the
-- rest of the partition keeps flowing. `replay-tool dead-letters retry` applies them again (the
-- stored event, if the store has it, else the envelope as received) once the cause is fixed.

create table dead_letter_events (
    id              uuid primary key default gen_random_uuid(),
    event_id        uuid not null,
    -- the JetStream consumer that received it (projections-p<N>).
    consumer_name   varchar(100) not null,
    tenant_id       text not null,
    aggregate_id    uuid not null,
    aggregate_type  text not null,
    event_type      text not null,
    sequence_number bigint not null,
    -- the envelope as received.
    envelope        jsonb not null,
    error           text not null,
    attempts        integer not null default 1,
    status          varchar(20) not null default 'parked'
                    constraint dead_letter_events_status_check check (status in ('parked', 'resolved')),
    parked_at       timestamp not null default now(),
    retried_at      timestamp,
    resolved_at     timestamp,
    constraint dead_letter_events_event_consumer_key unique (event_id, consumer_name)
);

create index dead_letter_events_parked_idx on dead_letter_events (consumer_name, parked_at) where status = 'parked';
create index dead_letter_events_aggregate_id_idx on dead_letter_events (aggregate_id);
create index dead_letter_events_tenant_id_idx on dead_letter_events (tenant_id);

-- tenant isolation, as every tenant table (0016); the grants come from 0016's default privileges.
alter table dead_letter_events enable row level security;
create policy tenant_isolation on dead_letter_events for all
    using (tenant_id = current_setting('app.current_tenant_id', true))
    with check (tenant_id = current_setting('app.current_tenant_id', true));
