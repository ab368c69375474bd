-- 0003_read_models: the contacts and sessions read tables (inventory section 1.2).
-- projection-service builds them from contact_event_store events delivered over jetstream; the
-- query endpoints read only these. version is the aggregate's last applied sequence_number.
-- All fields are the inventory's; values are written by the projections, never by hand.

-- contacts ---------------------------------------------------------------------------------------

create table contacts (
    id                         uuid primary key default gen_random_uuid(),
    -- no on delete rule in the inventory: a project with contacts cannot be deleted.
    project_id                 uuid references projects (id),
    tenant_id                  text not null,
    name                       text,
    email                      text,
    phone                      text,
    external_id                text,
    source_channel             text,
    language                   text default 'en',
    timezone                   text,
    -- a json array of tag strings (tags are a set in the domain).
    tags                       jsonb,
    profile_picture_url        text,
    profile_picture_fetched_at timestamp,
    first_interaction_at       timestamp,
    last_interaction_at        timestamp,
    version                    integer not null default 1,
    created_at                 timestamp,
    updated_at                 timestamp,
    deleted_at                 timestamp
);

create index contacts_project_id_idx on contacts (project_id);
create index contacts_tenant_id_idx on contacts (tenant_id);
create index contacts_name_idx on contacts (name);
create index contacts_email_idx on contacts (email);
create index contacts_phone_idx on contacts (phone);
create index contacts_external_id_idx on contacts (external_id);
-- default jsonb_ops (not jsonb_path_ops): "has tag x" is `tags ? 'x'`, which jsonb_path_ops
-- cannot serve.
create index contacts_tags_idx on contacts using gin (tags);
create index contacts_created_at_idx on contacts (created_at);
create index contacts_updated_at_idx on contacts (updated_at);
create index contacts_deleted_at_idx on contacts (deleted_at);
-- keyset (cursor) pagination inside a tenant: by (updated_at, id) and by id.
create index contacts_tenant_updated_at_id_idx on contacts (tenant_id, updated_at, id);
create index contacts_tenant_id_id_idx on contacts (tenant_id, id);

-- sessions ---------------------------------------------------------------------------------------

create table sessions (
    id                          uuid primary key default gen_random_uuid(),
    -- nullable and without on delete rule, as the inventory has it. The projections write a
    -- partition's events in order, so a contact row always exists before its sessions.
    contact_id                  uuid references contacts (id),
    tenant_id                   text not null,
    -- no foreign key to channel_types: the inventory gives none, and a read table must accept
    -- whatever the event carries (the command side validates the id).
    channel_type_id             bigint,
    -- no pipelines table in this service, so no foreign key.
    pipeline_id                 uuid,
    started_at                  timestamp not null,
    ended_at                    timestamp,
    status                      text default 'active'
                                constraint sessions_status_check check (status in ('active', 'ended')),
    end_reason                  text
                                constraint sessions_end_reason_check check (end_reason is null or end_reason in (
                                    'inactivity_timeout', 'manual_close', 'contact_request',
                                    'agent_close', 'system_close')),
    -- nanoseconds (a go time.Duration in the original code); 1800000000000 = 30 minutes.
    timeout_duration            bigint default 1800000000000,
    last_activity_at            timestamp not null,
    message_count               bigint default 0,
    messages_from_contact       bigint default 0,
    messages_from_agent         bigint default 0,
    duration_seconds            bigint default 0,
    first_contact_message_at    timestamp,
    first_agent_response_at     timestamp,
    agent_response_time_seconds bigint,
    contact_wait_time_seconds   bigint,
    agent_ids                   jsonb,
    agent_transfers             bigint default 0,
    summary                     text,
    sentiment                   text
                                constraint sessions_sentiment_check check (sentiment is null or sentiment in (
                                    'positive', 'neutral', 'negative', 'mixed')),
    -- the inventory says plain numeric; the -1..1 range is the domain's rule (event-model), not
    -- a check here.
    sentiment_score             numeric,
    topics                      jsonb,
    next_steps                  jsonb,
    key_entities                jsonb,
    resolved                    boolean default false,
    escalated                   boolean default false,
    converted                   boolean default false,
    outcome_tags                jsonb,
    version                     integer not null default 1,
    created_at                  timestamp,
    updated_at                  timestamp,
    deleted_at                  timestamp
);

-- the inventory only says "20+ indexes on contact_id, tenant_id, pipeline_id, status,
-- timestamps, jsonb fields"; this is the set the queries and the sweeper need.
create index sessions_contact_id_idx on sessions (contact_id);
create index sessions_tenant_id_idx on sessions (tenant_id);
create index sessions_pipeline_id_idx on sessions (pipeline_id);
create index sessions_status_idx on sessions (status);
create index sessions_channel_type_id_idx on sessions (channel_type_id);
create index sessions_started_at_idx on sessions (started_at);
create index sessions_ended_at_idx on sessions (ended_at);
create index sessions_last_activity_at_idx on sessions (last_activity_at);
create index sessions_deleted_at_idx on sessions (deleted_at);
-- default jsonb_ops so containment and key-existence (e.g. agent_ids ? 'agent-1') both work.
create index sessions_agent_ids_idx on sessions using gin (agent_ids);
create index sessions_topics_idx on sessions using gin (topics);
create index sessions_next_steps_idx on sessions using gin (next_steps);
create index sessions_key_entities_idx on sessions using gin (key_entities);
create index sessions_outcome_tags_idx on sessions using gin (outcome_tags);
-- composite from the inventory's section 4: a contact's sessions inside a tenant.
create index sessions_tenant_contact_idx on sessions (tenant_id, contact_id);
-- keyset (cursor) pagination inside a tenant.
create index sessions_tenant_started_at_id_idx on sessions (tenant_id, started_at, id);
-- the session-timeout sweeper: active sessions by last activity, small because ended sessions
-- drop out of it.
create index sessions_active_last_activity_idx on sessions (last_activity_at) where status = 'active';
