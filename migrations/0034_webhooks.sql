-- 0034_webhooks: outbound webhooks (issue 19). A subscription is the inventory's
-- webhook_subscriptions row (its `events` holds the patterns: `contact.*`, `session.ended`, ...;
-- `name` its description); each matching event becomes a webhook_deliveries row (an addition),
-- which the dispatcher POSTs, retries with backoff, and marks delivered or failed.
--
-- * Deliveries are made from the store, not from the broker: one intake, elected by an
--   advisory lock, walks contact_event_store in (transaction_id, position) order from its
--   checkpoint (webhook_intake, one row) and inserts the deliveries of each batch with the new
--   checkpoint in one transaction, so each event is taken in once, in order, whatever crashes.
-- * One subscription's deliveries of one partition key (the contact, or the project for its
--   own events) are sent one at a time in position order: a delivery waits while an earlier one
--   of its key is pending. Other keys and other subscriptions go on meanwhile.
-- * The request login lists deliveries and asks for a retry (update); the dispatcher
--   (ventros_projector) does the rest.

create table webhook_deliveries (
    id              uuid primary key default gen_random_uuid(),
    subscription_id uuid not null references webhook_subscriptions (id) on delete cascade,
    tenant_id       text not null,
    event_id        uuid not null,
    event_type      text not null,
    position        bigint not null,
    partition_key   uuid not null,
    status          text not null default 'pending'
                    constraint webhook_deliveries_status_check
                    check (status in ('pending', 'delivered', 'failed')),
    attempts        integer not null default 0,
    next_attempt_at timestamp not null default (now() at time zone 'utc'),
    last_status     integer,
    last_error      text,
    created_at      timestamp not null default (now() at time zone 'utc'),
    delivered_at    timestamp,
    constraint webhook_deliveries_subscription_event_key unique (subscription_id, event_id)
);

-- What is due, and what must go first.
create index webhook_deliveries_due_idx on webhook_deliveries (next_attempt_at)
    where status = 'pending';
create index webhook_deliveries_order_idx on webhook_deliveries (subscription_id, partition_key, position)
    where status = 'pending';
-- GET /webhooks/{id}/deliveries: newest first.
create index webhook_deliveries_subscription_idx on webhook_deliveries (subscription_id, id);

alter table webhook_deliveries enable row level security;
alter table webhook_deliveries force row level security;
create policy tenant_isolation on webhook_deliveries for all
    using (tenant_id = current_setting('app.current_tenant_id', true))
    with check (tenant_id = current_setting('app.current_tenant_id', true));
revoke insert, delete, truncate on webhook_deliveries from ventros_app;

create table webhook_intake (
    -- One row, id 1: the intake reads and writes only it.
    id             integer primary key default 1,
    -- The checkpoint: the last (transaction_id, position) taken in (platform's Checkpoint).
    transaction_id bigint not null default 0,
    position       bigint not null default 0,
    updated_at     timestamp
);
-- Subscriptions hear of the events that come after them: the intake starts at the store's end
-- as it is now.
insert into webhook_intake (transaction_id, position, updated_at)
select coalesce((select e.transaction_id::text::bigint from contact_event_store e
                  order by e.transaction_id desc, e.position desc limit 1), 0),
       coalesce((select e.position from contact_event_store e
                  order by e.transaction_id desc, e.position desc limit 1), 0),
       now() at time zone 'utc';
revoke all on webhook_intake from ventros_app;
