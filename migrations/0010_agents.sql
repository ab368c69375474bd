-- 0010_agents: who answers (inventory section 1.3): agents (human, ai or virtual) and
-- agent_sessions (which agents took part in which session). Conventions: see 0001 and 0007.
-- The ai interaction log (agent_ai_interactions) follows the debouncer's message groups, in 0011.

-- agents -----------------------------------------------------------------------------------------

create table agents (
    id                  uuid primary key default gen_random_uuid(),
    -- no on delete rule in the inventory for project_id and user_id: no action.
    project_id          uuid references projects (id),
    -- the user behind a human agent; none for ai and virtual agents.
    user_id             uuid references users (id),
    tenant_id           text not null,
    name                text not null,
    email               text,
    -- human, ai, virtual / online, offline, busy, away: values the inventory describes but does
    -- not mark check, so no check (a check only where the inventory says so).
    type                text not null default 'human',
    status              text not null default 'offline',
    active              boolean default true,
    config              jsonb,
    virtual_metadata    jsonb,
    sessions_handled    bigint default 0,
    average_response_ms bigint default 0,
    last_activity_at    timestamp,
    version             integer not null default 1,
    created_at          timestamp,
    updated_at          timestamp,
    deleted_at          timestamp
);

-- "15+ indexes on project_id, user_id, tenant_id, type, status, active, config (gin),
-- virtual_metadata (gin)": those, plus the original ventros schema's other single-field and
-- tenant composite indexes; 18 with the primary key.
create index agents_project_id_idx on agents (project_id);
create index agents_user_id_idx on agents (user_id);
create index agents_tenant_id_idx on agents (tenant_id);
create index agents_type_idx on agents (type);
create index agents_status_idx on agents (status);
create index agents_active_idx on agents (active);
create index agents_name_idx on agents (name);
create index agents_email_idx on agents (email);
create index agents_last_activity_at_idx on agents (last_activity_at);
create index agents_created_at_idx on agents (created_at);
create index agents_updated_at_idx on agents (updated_at);
create index agents_deleted_at_idx on agents (deleted_at);
create index agents_config_idx on agents using gin (config);
create index agents_virtual_metadata_idx on agents using gin (virtual_metadata);
create index agents_tenant_id_active_idx on agents (tenant_id, active);
create index agents_tenant_id_status_idx on agents (tenant_id, status);
create index agents_tenant_id_type_idx on agents (tenant_id, type);

-- agent_sessions ---------------------------------------------------------------------------------

-- no tenant_id in the inventory: the row belongs to its agent's and session's tenant.
create table agent_sessions (
    id              uuid primary key default gen_random_uuid(),
    -- no on delete rule in the inventory: no action.
    agent_id        uuid references agents (id),
    -- sessions is a rebuilt read table: deferrable (see 0007).
    session_id      uuid references sessions (id) deferrable initially immediate,
    role_in_session text,
    joined_at       timestamp not null,
    left_at         timestamp,
    is_active       boolean default true,
    metadata        jsonb,
    created_at      timestamp,
    updated_at      timestamp,
    deleted_at      timestamp
);

create index agent_sessions_agent_id_idx on agent_sessions (agent_id);
create index agent_sessions_session_id_idx on agent_sessions (session_id);
create index agent_sessions_is_active_idx on agent_sessions (is_active);
create index agent_sessions_joined_at_idx on agent_sessions (joined_at);
create index agent_sessions_left_at_idx on agent_sessions (left_at);
-- section 4: every deleted_at is indexed.
create index agent_sessions_deleted_at_idx on agent_sessions (deleted_at);
