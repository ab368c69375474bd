-- 0005_command_support: tables command-service needs beyond the inventory.
-- idempotency_keys backs the Idempotency-Key header (DESIGN.md, "Writing: command-service"):
-- the same key with the same body (request_hash) returns the stored first response and writes
-- nothing new; the same key with another body is refused with 422. Keys are scoped per project,
-- and rows are expired by age (created_at).

create table idempotency_keys (
    project_id      uuid not null references projects (id) on delete cascade,
    tenant_id       text not null,
    idempotency_key text not null,
    request_hash    text not null,
    response_status int not null,
    response_body   jsonb not null,
    created_at      timestamp not null default now(),
    primary key (project_id, idempotency_key)
);

-- for the expiry sweep (delete ... where created_at < $1).
create index idempotency_keys_created_at_idx on idempotency_keys (created_at);
