-- 0015_supporting: the remaining tables of inventory section 1.9: contact_events (a contact's
-- timeline), contact_lists (segments), notes, credentials (encrypted integration secrets) and
-- webhook_subscriptions. Conventions: see 0001 and 0007.

-- contact_events ---------------------------------------------------------------------------------

create table contact_events (
    id                 uuid primary key default gen_random_uuid(),
    -- contacts and sessions are rebuilt read tables: deferrable (see 0007).
    contact_id         uuid references contacts (id) deferrable initially immediate,
    session_id         uuid references sessions (id) deferrable initially immediate,
    tenant_id          text not null,
    event_type         text not null,
    category           text not null,
    priority           text not null,
    title              text,
    description        text,
    payload            jsonb,
    metadata           jsonb,
    source             text not null,
    triggered_by       uuid,
    integration_source text,
    is_realtime        boolean default true,
    delivered          boolean default false,
    delivered_at       timestamp,
    read               boolean default false,
    read_at            timestamp,
    visible_to_client  boolean default true,
    visible_to_agent   boolean default true,
    expires_at         timestamp,
    occurred_at        timestamp not null,
    created_at         timestamp,
    deleted_at         timestamp
);

-- "15+ indexes on all major fields": the original ventros schema's set, 17 with the primary key.
-- payload and metadata get no gin index: none is named (see 0007).
create index contact_events_contact_id_idx on contact_events (contact_id);
create index contact_events_session_id_idx on contact_events (session_id);
create index contact_events_tenant_id_idx on contact_events (tenant_id);
create index contact_events_event_type_idx on contact_events (event_type);
create index contact_events_category_idx on contact_events (category);
create index contact_events_priority_idx on contact_events (priority);
create index contact_events_source_idx on contact_events (source);
create index contact_events_triggered_by_idx on contact_events (triggered_by);
create index contact_events_is_realtime_idx on contact_events (is_realtime);
create index contact_events_delivered_idx on contact_events (delivered);
create index contact_events_read_idx on contact_events (read);
create index contact_events_visible_to_client_idx on contact_events (visible_to_client);
create index contact_events_visible_to_agent_idx on contact_events (visible_to_agent);
create index contact_events_expires_at_idx on contact_events (expires_at);
create index contact_events_occurred_at_idx on contact_events (occurred_at);
create index contact_events_deleted_at_idx on contact_events (deleted_at);

-- contact_lists ----------------------------------------------------------------------------------

create table contact_lists (
    id                 uuid primary key default gen_random_uuid(),
    -- not null but without a foreign key: the table section lists none (the relationship map
    -- draws projects -> contact_lists; the table section is taken as the specification).
    project_id         uuid not null,
    tenant_id          text not null,
    name               text not null,
    description        text,
    -- how a dynamic list combines its filters; 'AND' as the inventory writes it (upper case).
    logical_operator   text default 'AND',
    is_static          boolean default false,
    contact_count      bigint default 0,
    last_calculated_at timestamp,
    version            integer not null default 1,
    created_at         timestamp,
    updated_at         timestamp,
    deleted_at         timestamp
);

create index contact_lists_project_id_idx on contact_lists (project_id);
create index contact_lists_tenant_id_idx on contact_lists (tenant_id);
create index contact_lists_deleted_at_idx on contact_lists (deleted_at);

-- notes ------------------------------------------------------------------------------------------

create table notes (
    id                uuid primary key default gen_random_uuid(),
    -- contacts and sessions are rebuilt read tables: deferrable (see 0007).
    contact_id        uuid references contacts (id) deferrable initially immediate,
    session_id        uuid references sessions (id) deferrable initially immediate,
    tenant_id         text not null,
    author_id         uuid not null,
    author_type       text not null,
    author_name       text not null,
    content           text not null,
    note_type         text not null,
    priority          text default 'normal',
    visible_to_client boolean default false,
    pinned            boolean default false,
    tags              text[],
    mentions          jsonb,
    attachments       text[],
    created_at        timestamp,
    updated_at        timestamp,
    deleted_at        timestamp
);

create index notes_contact_id_idx on notes (contact_id);
create index notes_session_id_idx on notes (session_id);
create index notes_author_id_idx on notes (author_id);
create index notes_author_type_idx on notes (author_type);
create index notes_note_type_idx on notes (note_type);
create index notes_priority_idx on notes (priority);
-- tags is text[]: gin with the default array_ops (tags @> array['x']).
create index notes_tags_idx on notes using gin (tags);
create index notes_mentions_idx on notes using gin (mentions);
-- not in the table's list; section 4 says every tenant_id and deleted_at is indexed, and
-- row-level security filters on tenant_id.
create index notes_tenant_id_idx on notes (tenant_id);
create index notes_deleted_at_idx on notes (deleted_at);

-- credentials ------------------------------------------------------------------------------------

create table credentials (
    -- no default in the inventory: the writer supplies the id.
    id                             uuid primary key,
    tenant_id                      varchar(255) not null,
    -- a project's credential, or (null) one of the whole tenant.
    project_id                     uuid references projects (id) on delete set null,
    -- marked check without values in the inventory: the nine types of the original ventros
    -- migration.
    credential_type                varchar(50) not null
                                   constraint credentials_credential_type_check check (credential_type in (
                                       'meta_whatsapp_cloud', 'meta_ads', 'meta_conversions_api',
                                       'google_ads', 'google_analytics', 'webhook_auth', 'api_key',
                                       'basic_auth', 'waha_instance')),
    name                           varchar(255) not null,
    description                    text,
    -- aes-256-gcm ciphertexts and nonces (base64); plaintext is never stored.
    encrypted_value_ciphertext     text not null,
    encrypted_value_nonce          text not null,
    oauth_access_token_ciphertext  text,
    oauth_access_token_nonce       text,
    oauth_refresh_token_ciphertext text,
    oauth_refresh_token_nonce      text,
    oauth_token_type               varchar(20) default 'Bearer',
    oauth_expires_at               timestamp,
    metadata                       jsonb default '{}',
    is_active                      boolean default true,
    expires_at                     timestamp,
    last_used_at                   timestamp,
    version                        integer not null default 1,
    created_at                     timestamp default now(),
    updated_at                     timestamp default now()
);

create index credentials_tenant_id_idx on credentials (tenant_id);
create index credentials_project_id_idx on credentials (project_id);
create index credentials_credential_type_idx on credentials (credential_type);
create index credentials_tenant_id_credential_type_idx on credentials (tenant_id, credential_type);
create index credentials_is_active_idx on credentials (is_active);
create index credentials_expires_at_idx on credentials (expires_at);
create index credentials_metadata_idx on credentials using gin (metadata);
-- the inventory's unique constraint holds an expression (a name is unique per project, and
-- tenant-wide credentials share the 'global' slot), so it is a unique index.
create unique index credentials_tenant_project_name_key
    on credentials (tenant_id, coalesce(project_id::text, 'global'), name);

-- webhook_subscriptions --------------------------------------------------------------------------

create table webhook_subscriptions (
    id                       uuid primary key default gen_random_uuid(),
    user_id                  uuid references users (id) on delete cascade,
    project_id               uuid references projects (id) on delete cascade,
    tenant_id                text not null,
    name                     text not null,
    url                      text not null,
    events                   text[],
    subscribe_contact_events boolean default false,
    contact_event_types      text[],
    contact_event_categories text[],
    active                   boolean default true,
    secret                   text,
    headers                  jsonb,
    retry_count              bigint default 3,
    timeout_seconds          bigint default 30,
    last_triggered_at        timestamp,
    last_success_at          timestamp,
    last_failure_at          timestamp,
    success_count            bigint default 0,
    failure_count            bigint default 0,
    version                  integer not null default 1,
    created_at               timestamp,
    updated_at               timestamp,
    deleted_at               timestamp
);

create index webhook_subscriptions_user_id_idx on webhook_subscriptions (user_id);
create index webhook_subscriptions_project_id_idx on webhook_subscriptions (project_id);
create index webhook_subscriptions_tenant_id_idx on webhook_subscriptions (tenant_id);
create index webhook_subscriptions_active_idx on webhook_subscriptions (active);
create index webhook_subscriptions_subscribe_contact_events_idx on webhook_subscriptions (subscribe_contact_events);
create index webhook_subscriptions_deleted_at_idx on webhook_subscriptions (deleted_at);
