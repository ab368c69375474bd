-- 0001_identity: who may call the services and on which project.
-- users, billing_accounts, projects, project_members and user_api_keys, shaped as
-- /work/shared/schema-inventory.md (sections 1.1 and 1.9) describes them. The command and query
-- services authenticate an api key (sha-256 in user_api_keys.key_hash), then resolve the project
-- (owner or project_members row) and its tenant_id; projects.session_timeout_minutes feeds
-- session.started.
--
-- Conventions in every migration of this directory:
-- * columns, types, defaults and nullability are the inventory's, nothing more: a column the
--   inventory does not mark NOT NULL stays nullable, even a foreign key column.
-- * timestamps are `timestamp` (without time zone), as the inventory has them; the services
--   write utc. created_at/updated_at get a default only where the inventory gives one.
-- * a foreign key without an ON DELETE rule in the inventory keeps the default (no action).
-- * an index the inventory lists as "unique" is the unique constraint's own index; it is not
--   created a second time.
-- * gen_random_uuid() is built into postgresql 13+, so no pgcrypto extension.

-- users ------------------------------------------------------------------------------------------

create table users (
    id            uuid primary key default gen_random_uuid(),
    name          text not null,
    email         text not null,
    password_hash text not null,
    status        text default 'active',
    -- the inventory only says "check"; the allowed values are the ones it lists for the role.
    role          text default 'user'
                  constraint users_role_check check (role in ('admin', 'user', 'manager', 'readonly')),
    settings      jsonb,
    created_at    timestamp,
    updated_at    timestamp,
    deleted_at    timestamp,
    constraint users_email_key unique (email)
);

create index users_deleted_at_idx on users (deleted_at);

-- billing_accounts -------------------------------------------------------------------------------

create table billing_accounts (
    id                 uuid primary key default gen_random_uuid(),
    user_id            uuid references users (id) on delete cascade,
    name               text not null,
    payment_status     text default 'pending',
    payment_methods    jsonb,
    billing_email      text not null,
    stripe_customer_id varchar(255),
    suspended          boolean default false,
    suspended_at       timestamp,
    suspension_reason  text,
    version            integer not null default 1,
    created_at         timestamp,
    updated_at         timestamp,
    deleted_at         timestamp
);

create index billing_accounts_user_id_idx on billing_accounts (user_id);
create index billing_accounts_payment_status_idx on billing_accounts (payment_status);
create index billing_accounts_suspended_idx on billing_accounts (suspended);
-- ambiguity: the table section lists stripe_customer_id as a plain index, the "unique indexes"
-- section (4) as unique. A stripe customer belongs to one billing account, so it is unique;
-- nulls (accounts not yet linked to stripe) stay distinct and do not clash.
create unique index billing_accounts_stripe_customer_id_key on billing_accounts (stripe_customer_id);
create index billing_accounts_deleted_at_idx on billing_accounts (deleted_at);

-- projects ---------------------------------------------------------------------------------------

create table projects (
    id                      uuid primary key default gen_random_uuid(),
    -- the owner; no on delete rule in the inventory, so deleting a user who owns a project fails.
    user_id                 uuid references users (id),
    billing_account_id      uuid references billing_accounts (id),
    tenant_id               text not null,
    name                    text not null,
    description             text,
    configuration           jsonb,
    active                  boolean default true,
    session_timeout_minutes bigint not null default 30,
    version                 integer not null default 1,
    created_at              timestamp,
    updated_at              timestamp,
    deleted_at              timestamp,
    constraint projects_tenant_id_key unique (tenant_id)
);

create index projects_user_id_idx on projects (user_id);
create index projects_billing_account_id_idx on projects (billing_account_id);
create index projects_active_idx on projects (active);
create index projects_name_idx on projects (name);
-- default jsonb_ops (not jsonb_path_ops) so key-existence operators (?, ?|, ?&) can use it too.
create index projects_configuration_idx on projects using gin (configuration);
-- the inventory's "timeout" index: the only timeout column here is session_timeout_minutes.
create index projects_session_timeout_minutes_idx on projects (session_timeout_minutes);
create index projects_deleted_at_idx on projects (deleted_at);

-- project_members --------------------------------------------------------------------------------

create table project_members (
    -- the inventory gives this primary key no default; gen_random_uuid() is added so an insert
    -- need not invent the id, as with every other table here.
    id         uuid primary key default gen_random_uuid(),
    project_id uuid references projects (id) on delete cascade,
    agent_id   varchar(255) not null,
    role       varchar(50) not null
               constraint project_members_role_check check (role in ('admin', 'supervisor', 'agent', 'viewer')),
    invited_by varchar(255) not null,
    -- not null without a default, as the inventory has it: the inviter's time is always given.
    invited_at timestamp not null,
    version    integer not null default 1,
    created_at timestamp default now(),
    updated_at timestamp default now(),
    deleted_at timestamp,
    constraint project_members_project_agent_key unique (project_id, agent_id)
);

-- listed by the inventory although it is a prefix of the unique (project_id, agent_id) index;
-- kept to match the inventory (the table is small, the cost negligible).
create index project_members_project_id_idx on project_members (project_id);
create index project_members_agent_id_idx on project_members (agent_id);
create index project_members_project_role_idx on project_members (project_id, role);
create index project_members_deleted_at_idx on project_members (deleted_at);

-- user_api_keys ----------------------------------------------------------------------------------

create table user_api_keys (
    id         uuid primary key default gen_random_uuid(),
    user_id    uuid references users (id),
    name       text not null,
    -- hex sha-256 of the bearer key; the key itself is never stored.
    key_hash   text not null,
    active     boolean default true,
    last_used  timestamp,
    expires_at timestamp,
    created_at timestamp,
    updated_at timestamp,
    deleted_at timestamp,
    constraint user_api_keys_key_hash_key unique (key_hash)
);

create index user_api_keys_user_id_idx on user_api_keys (user_id);
create index user_api_keys_active_idx on user_api_keys (active);
create index user_api_keys_deleted_at_idx on user_api_keys (deleted_at);
