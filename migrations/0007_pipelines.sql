-- 0007_pipelines: the sales/support pipelines (inventory section 1.2): pipelines, their
-- pipeline_statuses, and contact_pipeline_statuses (a contact's moves through a pipeline).
-- First of the migrations that bring the database to the whole inventory (issue 3). They come
-- in an order where every foreign key points backwards: pipelines (0007), channels and chats
-- (0008, channels.pipeline_id), messages (0009), agents (0010), message processing (0011),
-- tracking (0012), automation (0013), billing (0014), supporting tables (0015), and row-level
-- security over all of them (0016).
-- The inventory says 48 tables but describes 43 (sections 1.1-1.9), and names no other table
-- anywhere (relationship map, index lists): the 43 are created, nothing is invented for the
-- other five. With the core's idempotency_keys (0005) the database has 44 tables.
--
-- Conventions of 0001 hold (columns, defaults and nullability are the inventory's; timestamps
-- without time zone; no on delete rule = no action; a unique column's index is its constraint's).
-- Added for these migrations:
-- * every no-action foreign key to the read tables contacts or sessions is deferrable (initially
--   immediate): replay-tool rebuilds those tables by deleting and re-inserting their rows in one
--   transaction under `set constraints all deferred`, so a row here pointing at a contact is
--   checked at commit, when the contact is back. Ordinary statements still check at once.
-- * section 4 of the inventory says every deleted_at, tenant_id and foreign key column is
--   indexed: where a table section's list omits one, it is indexed anyway (marked below).
--   Its claim that every jsonb column has a gin index is not applied: gin only where named.
-- * the machine-readable form of all this, with every choice, is
--   e2e/tests/schema/inventory.json; e2e/tests/schema checks the catalog against it.

-- pipelines --------------------------------------------------------------------------------------

create table pipelines (
    id                      uuid primary key default gen_random_uuid(),
    -- no on delete rule in the inventory: no action (a project with pipelines cannot be deleted).
    project_id              uuid references projects (id),
    tenant_id               text not null,
    name                    text not null,
    description             text,
    color                   text,
    position                bigint default 0,
    active                  boolean default true,
    -- overrides projects.session_timeout_minutes for sessions of this pipeline.
    session_timeout_minutes bigint,
    enable_ai_summary       boolean default false,
    ai_provider             text,
    ai_model                text,
    version                 integer not null default 1,
    created_at              timestamp,
    updated_at              timestamp,
    deleted_at              timestamp
);

create index pipelines_project_id_idx on pipelines (project_id);
create index pipelines_tenant_id_idx on pipelines (tenant_id);
create index pipelines_active_idx on pipelines (active);
create index pipelines_name_idx on pipelines (name);
create index pipelines_position_idx on pipelines (position);
-- the inventory's "ai settings" index: one composite over the three ai columns.
create index pipelines_ai_settings_idx on pipelines (enable_ai_summary, ai_provider, ai_model);
-- not in the table's list; section 4 says every deleted_at is indexed.
create index pipelines_deleted_at_idx on pipelines (deleted_at);

-- pipeline_statuses ------------------------------------------------------------------------------

-- no tenant_id in the inventory: a status belongs to its pipeline's tenant.
create table pipeline_statuses (
    id          uuid primary key default gen_random_uuid(),
    -- no on delete rule in the inventory: no action.
    pipeline_id uuid references pipelines (id),
    name        text not null,
    description text,
    color       text,
    status_type text not null,
    position    bigint default 0,
    active      boolean default true,
    version     integer not null default 1,
    created_at  timestamp,
    updated_at  timestamp,
    deleted_at  timestamp
);

create index pipeline_statuses_pipeline_id_idx on pipeline_statuses (pipeline_id);
create index pipeline_statuses_status_type_idx on pipeline_statuses (status_type);
create index pipeline_statuses_position_idx on pipeline_statuses (position);
create index pipeline_statuses_active_idx on pipeline_statuses (active);
-- section 4: every deleted_at is indexed.
create index pipeline_statuses_deleted_at_idx on pipeline_statuses (deleted_at);

-- contact_pipeline_statuses ----------------------------------------------------------------------

create table contact_pipeline_statuses (
    id          uuid primary key default gen_random_uuid(),
    -- contacts is a rebuilt read table: deferrable (see the header).
    contact_id  uuid references contacts (id) deferrable initially immediate,
    -- no on delete rule in the inventory for these two: no action.
    pipeline_id uuid references pipelines (id),
    status_id   uuid references pipeline_statuses (id),
    tenant_id   text not null,
    entered_at  timestamp not null,
    exited_at   timestamp,
    -- time spent in the status; the inventory gives no unit.
    duration    bigint,
    notes       text,
    metadata    jsonb,
    created_at  timestamp,
    updated_at  timestamp,
    deleted_at  timestamp
);

create index contact_pipeline_statuses_contact_id_idx on contact_pipeline_statuses (contact_id);
create index contact_pipeline_statuses_pipeline_id_idx on contact_pipeline_statuses (pipeline_id);
create index contact_pipeline_statuses_status_id_idx on contact_pipeline_statuses (status_id);
create index contact_pipeline_statuses_tenant_id_idx on contact_pipeline_statuses (tenant_id);
-- section 4: every deleted_at is indexed.
create index contact_pipeline_statuses_deleted_at_idx on contact_pipeline_statuses (deleted_at);
