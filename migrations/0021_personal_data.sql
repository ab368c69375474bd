-- 0021_personal_data: crypto-shredding (README "Personal data"). Every personal field of an
-- event is sealed with its contact's own data key before it leaves command-service; forgetting
-- a contact destroys that key, and with it every copy of those fields (the store, snapshots, the
-- outbox, the broker, the audit log, dead letters). Not in the inventory: an addition of the
-- event-sourced core, like idempotency_keys.

create table contact_data_keys (
    contact_id   uuid primary key,
    tenant_id    varchar(255) not null,
    -- the 32-byte key wrapped by the key-encryption key named in kek_id (nonce || ciphertext),
    -- or the bare key when kek_id = 'none' (no DATA_KEK: development only). Null once
    -- destroyed: the row stays as the tombstone that tells readers "redacted", not "missing".
    key_material bytea,
    kek_id       varchar(32) not null,
    created_at   timestamp not null default now(),
    -- set together with key_material := null (platform::personal is the only writer).
    destroyed_at timestamp
);

create index contact_data_keys_tenant_id_idx on contact_data_keys (tenant_id);
-- a KEK rotation walks the keys still under an old KEK.
create index contact_data_keys_kek_id_idx on contact_data_keys (kek_id) where key_material is not null;

-- tenant isolation, as every tenant table (0016); the grants come from 0016's default privileges.
alter table contact_data_keys enable row level security;
create policy tenant_isolation on contact_data_keys for all
    using (tenant_id = current_setting('app.current_tenant_id', true))
    with check (tenant_id = current_setting('app.current_tenant_id', true));

-- `replay-tool encrypt-history` walks the events stored in the clear by the previous release;
-- rewritten rows leave this index, so it is empty once the history is sealed.
create index contact_event_store_plain_idx on contact_event_store (position) where event_version = 'v1';

-- a forgotten contact keeps its read row (id, tenant, version, times, tags and other
-- non-personal columns); every personal column is null and this says why.
alter table contacts add column forgotten_at timestamp;
