-- 0008_channels_and_chats: where conversations come from (inventory section 1.2): channels (a
-- connected whatsapp number, instagram account, bot ...) and chats (an individual, group or
-- channel conversation). Conventions: see 0001 and 0007.

-- channels ---------------------------------------------------------------------------------------

create table channels (
    id                       uuid primary key default gen_random_uuid(),
    user_id                  uuid references users (id) on delete cascade,
    project_id               uuid references projects (id) on delete cascade,
    tenant_id                text not null,
    name                     text not null,
    -- waha, whatsapp_business, ...: free text in the inventory (no check).
    type                     text not null,
    status                   text default 'inactive',
    external_id              text,
    config                   jsonb,
    custom_field_definitions jsonb default '{}',
    -- listed three times by the inventory (unique column, unique index, partial index where not
    -- null): this one constraint serves all three, as nulls never clash in a unique index.
    webhook_id               text unique,
    webhook_url              text,
    webhook_configured_at    timestamp,
    webhook_active           boolean default false,
    -- the default pipeline for the channel's sessions; a deleted pipeline just unsets it.
    pipeline_id              uuid references pipelines (id) on delete set null,
    session_timeout_minutes  bigint,
    ai_enabled               boolean default false,
    ai_agents_enabled        boolean default false,
    allow_groups             boolean default false,
    tracking_enabled         boolean default false,
    debounce_timeout_ms      bigint not null default 15000,
    messages_received        bigint default 0,
    messages_sent            bigint default 0,
    last_message_at          timestamp,
    last_error_at            timestamp,
    last_error               text,
    version                  integer not null default 1,
    created_at               timestamp,
    updated_at               timestamp,
    deleted_at               timestamp
);

-- The inventory says only "25+ indexes covering all major fields and jsonb columns". The set is
-- the original ventros schema's (the one the inventory summarises): one per field a list or
-- lookup filters on, the gin indexes and composites of section 4, and the partial external_id
-- index of section 4 in place of a plain one. 28 with the primary key and webhook_id's.
create index channels_user_id_idx on channels (user_id);
create index channels_project_id_idx on channels (project_id);
create index channels_tenant_id_idx on channels (tenant_id);
create index channels_name_idx on channels (name);
create index channels_type_idx on channels (type);
create index channels_status_idx on channels (status);
create index channels_pipeline_id_idx on channels (pipeline_id);
create index channels_session_timeout_minutes_idx on channels (session_timeout_minutes);
create index channels_webhook_url_idx on channels (webhook_url);
create index channels_webhook_active_idx on channels (webhook_active);
create index channels_webhook_configured_at_idx on channels (webhook_configured_at);
create index channels_ai_enabled_idx on channels (ai_enabled);
create index channels_ai_agents_enabled_idx on channels (ai_agents_enabled);
create index channels_allow_groups_idx on channels (allow_groups);
create index channels_tracking_enabled_idx on channels (tracking_enabled);
create index channels_last_message_at_idx on channels (last_message_at);
create index channels_last_error_at_idx on channels (last_error_at);
create index channels_created_at_idx on channels (created_at);
create index channels_updated_at_idx on channels (updated_at);
create index channels_deleted_at_idx on channels (deleted_at);
create index channels_external_id_idx on channels (external_id) where external_id is not null;
-- default jsonb_ops (containment and key existence), as for the core's gin indexes.
create index channels_config_idx on channels using gin (config);
create index channels_custom_field_definitions_idx on channels using gin (custom_field_definitions);
create index channels_project_id_type_idx on channels (project_id, type);
create index channels_tenant_id_status_idx on channels (tenant_id, status);
create index channels_tenant_id_type_idx on channels (tenant_id, type);

-- chats ------------------------------------------------------------------------------------------

create table chats (
    id              uuid primary key default gen_random_uuid(),
    project_id      uuid references projects (id) on delete cascade,
    tenant_id       text not null,
    chat_type       text not null
                    constraint chats_chat_type_check check (chat_type in ('individual', 'group', 'channel')),
    -- the provider's chat id (…@g.us). Unique across the whole table as the inventory says, not
    -- per tenant: two tenants cannot both hold the same group. Kept literal; a per-tenant key
    -- would be a later, deliberate change.
    external_id     text unique,
    subject         varchar(255),
    description     text,
    participants    jsonb not null default '[]',
    custom_fields   jsonb default '{}',
    status          text default 'active'
                    constraint chats_status_check check (status in ('active', 'archived', 'closed')),
    metadata        jsonb default '{}',
    last_message_at timestamp,
    version         integer not null default 1,
    created_at      timestamp default now(),
    updated_at      timestamp default now(),
    deleted_at      timestamp
);

create index chats_project_id_idx on chats (project_id);
create index chats_tenant_id_idx on chats (tenant_id);
-- the inventory lists an index on "type"; the column is chat_type.
create index chats_chat_type_idx on chats (chat_type);
create index chats_status_idx on chats (status);
create index chats_participants_idx on chats using gin (participants);
create index chats_custom_fields_idx on chats using gin (custom_fields);
create index chats_metadata_idx on chats using gin (metadata);
-- section 4: every deleted_at is indexed.
create index chats_deleted_at_idx on chats (deleted_at);
