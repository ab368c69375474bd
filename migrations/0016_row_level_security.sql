-- 0016_row_level_security: tenant isolation in the database itself, as defence in depth
-- (DESIGN.md "Tenancy and security", inventory sections 5 and 6.9): the services filter every
-- query by tenant, and these policies hold even where a query forgets to.
--
-- * every table that carries tenant_id (27: the 26 of the inventory that have one, core tables
--   included, and idempotency_keys) gets row-level security and one policy, tenant_isolation,
--   for all commands: a row is visible, and may be written, only when its tenant_id is the
--   transaction's app.current_tenant_id (`set local app.current_tenant_id = '...'`).
--   current_setting(..., true) is null when the setting was never made, and '' after a set
--   local has ended: either way no row matches, so a connection that forgot the tenant sees
--   nothing. outbox_events.tenant_id is nullable; such rows are invisible to ventros_app.
--   tenant_id is text in some tables and varchar(100/255) in others, as the inventory has
--   them; the policy compares it as text either way.
-- * the 17 tables without tenant_id (users, billing_accounts, project_members, user_api_keys,
--   channel_types, processed_events, pipeline_statuses, agent_sessions, message_enrichments,
--   broadcast_executions, sequence_steps, sequence_enrollments, campaign_steps,
--   campaign_enrollments, subscriptions, invoices, usage_meters) have no policy: the inventory
--   gives them no tenant (contrary to its "all tables have tenant_id"); they are reached through
--   a tenant-scoped parent or hold no tenant data.
-- * a superuser and a table's owner bypass row-level security. ventros_app is the non-superuser
--   role the services are to use so that the policies bind. They still connect as postgres (the
--   owner, a superuser) for now and must keep working, so `force row level security`, which
--   would bind the owner, is not set. Switching them to ventros_app is later work; the api-key
--   lookup (user_api_keys -> projects), made before the tenant is known, will then need the
--   projector role or a security-definer function.
-- * ventros_projector has bypassrls: the projection workers and the replay tool apply batches
--   that mix tenants, which a per-transaction tenant setting cannot express.
-- * roles are cluster-wide while this migration runs once per database, and the tests migrate
--   many databases at once: each role is created in a block that ignores an existing role
--   (duplicate_object) and a concurrent creation (unique_violation on pg_authid).
--
-- Everything here is transactional (create role, grant, policies): the migration runs inside
-- sqlx's transaction like every other, and a failure leaves no half-made role behind.

-- roles ------------------------------------------------------------------------------------------

do $$
begin
    create role ventros_app nologin;
exception
    when duplicate_object then null;
    when unique_violation then null;
end
$$;

do $$
begin
    create role ventros_projector nologin bypassrls;
exception
    when duplicate_object then null;
    when unique_violation then null;
end
$$;

-- privileges: the same for both roles; row-level security makes the difference. Tables and
-- sequences later migrations create get the same grants by default.
grant usage on schema public to ventros_app, ventros_projector;
grant select, insert, update, delete on all tables in schema public to ventros_app, ventros_projector;
grant usage on all sequences in schema public to ventros_app, ventros_projector;
alter default privileges in schema public
    grant select, insert, update, delete on tables to ventros_app, ventros_projector;
alter default privileges in schema public
    grant usage on sequences to ventros_app, ventros_projector;

-- sqlx's own bookkeeping is not the services' to touch. (It exists whenever sqlx applies this
-- file; the guard lets the file also run by hand, e.g. through psql.)
do $$
begin
    if to_regclass('_sqlx_migrations') is not null then
        revoke all on _sqlx_migrations from ventros_app, ventros_projector;
    end if;
end
$$;

-- core tables (0001-0005) ------------------------------------------------------------------------

alter table projects enable row level security;
create policy tenant_isolation on projects for all
    using (tenant_id = current_setting('app.current_tenant_id', true))
    with check (tenant_id = current_setting('app.current_tenant_id', true));

alter table contacts enable row level security;
create policy tenant_isolation on contacts for all
    using (tenant_id = current_setting('app.current_tenant_id', true))
    with check (tenant_id = current_setting('app.current_tenant_id', true));

alter table sessions enable row level security;
create policy tenant_isolation on sessions for all
    using (tenant_id = current_setting('app.current_tenant_id', true))
    with check (tenant_id = current_setting('app.current_tenant_id', true));

alter table contact_event_store enable row level security;
create policy tenant_isolation on contact_event_store for all
    using (tenant_id = current_setting('app.current_tenant_id', true))
    with check (tenant_id = current_setting('app.current_tenant_id', true));

alter table contact_snapshots enable row level security;
create policy tenant_isolation on contact_snapshots for all
    using (tenant_id = current_setting('app.current_tenant_id', true))
    with check (tenant_id = current_setting('app.current_tenant_id', true));

alter table outbox_events enable row level security;
create policy tenant_isolation on outbox_events for all
    using (tenant_id = current_setting('app.current_tenant_id', true))
    with check (tenant_id = current_setting('app.current_tenant_id', true));

alter table domain_event_logs enable row level security;
create policy tenant_isolation on domain_event_logs for all
    using (tenant_id = current_setting('app.current_tenant_id', true))
    with check (tenant_id = current_setting('app.current_tenant_id', true));

alter table idempotency_keys enable row level security;
create policy tenant_isolation on idempotency_keys for all
    using (tenant_id = current_setting('app.current_tenant_id', true))
    with check (tenant_id = current_setting('app.current_tenant_id', true));

-- pipelines, channels, chats, messages, agents (0007-0010) ---------------------------------------

alter table pipelines enable row level security;
create policy tenant_isolation on pipelines for all
    using (tenant_id = current_setting('app.current_tenant_id', true))
    with check (tenant_id = current_setting('app.current_tenant_id', true));

alter table contact_pipeline_statuses enable row level security;
create policy tenant_isolation on contact_pipeline_statuses for all
    using (tenant_id = current_setting('app.current_tenant_id', true))
    with check (tenant_id = current_setting('app.current_tenant_id', true));

alter table channels enable row level security;
create policy tenant_isolation on channels for all
    using (tenant_id = current_setting('app.current_tenant_id', true))
    with check (tenant_id = current_setting('app.current_tenant_id', true));

alter table chats enable row level security;
create policy tenant_isolation on chats for all
    using (tenant_id = current_setting('app.current_tenant_id', true))
    with check (tenant_id = current_setting('app.current_tenant_id', true));

alter table messages enable row level security;
create policy tenant_isolation on messages for all
    using (tenant_id = current_setting('app.current_tenant_id', true))
    with check (tenant_id = current_setting('app.current_tenant_id', true));

alter table agents enable row level security;
create policy tenant_isolation on agents for all
    using (tenant_id = current_setting('app.current_tenant_id', true))
    with check (tenant_id = current_setting('app.current_tenant_id', true));

-- message processing, tracking (0011-0012) -------------------------------------------------------

alter table message_groups enable row level security;
create policy tenant_isolation on message_groups for all
    using (tenant_id = current_setting('app.current_tenant_id', true))
    with check (tenant_id = current_setting('app.current_tenant_id', true));

alter table agent_ai_interactions enable row level security;
create policy tenant_isolation on agent_ai_interactions for all
    using (tenant_id = current_setting('app.current_tenant_id', true))
    with check (tenant_id = current_setting('app.current_tenant_id', true));

alter table trackings enable row level security;
create policy tenant_isolation on trackings for all
    using (tenant_id = current_setting('app.current_tenant_id', true))
    with check (tenant_id = current_setting('app.current_tenant_id', true));

alter table tracking_enrichments enable row level security;
create policy tenant_isolation on tracking_enrichments for all
    using (tenant_id = current_setting('app.current_tenant_id', true))
    with check (tenant_id = current_setting('app.current_tenant_id', true));

-- automation (0013) ------------------------------------------------------------------------------

alter table automations enable row level security;
create policy tenant_isolation on automations for all
    using (tenant_id = current_setting('app.current_tenant_id', true))
    with check (tenant_id = current_setting('app.current_tenant_id', true));

alter table broadcasts enable row level security;
create policy tenant_isolation on broadcasts for all
    using (tenant_id = current_setting('app.current_tenant_id', true))
    with check (tenant_id = current_setting('app.current_tenant_id', true));

alter table sequences enable row level security;
create policy tenant_isolation on sequences for all
    using (tenant_id = current_setting('app.current_tenant_id', true))
    with check (tenant_id = current_setting('app.current_tenant_id', true));

alter table campaigns enable row level security;
create policy tenant_isolation on campaigns for all
    using (tenant_id = current_setting('app.current_tenant_id', true))
    with check (tenant_id = current_setting('app.current_tenant_id', true));

-- supporting tables (0015) -----------------------------------------------------------------------

alter table contact_events enable row level security;
create policy tenant_isolation on contact_events for all
    using (tenant_id = current_setting('app.current_tenant_id', true))
    with check (tenant_id = current_setting('app.current_tenant_id', true));

alter table contact_lists enable row level security;
create policy tenant_isolation on contact_lists for all
    using (tenant_id = current_setting('app.current_tenant_id', true))
    with check (tenant_id = current_setting('app.current_tenant_id', true));

alter table notes enable row level security;
create policy tenant_isolation on notes for all
    using (tenant_id = current_setting('app.current_tenant_id', true))
    with check (tenant_id = current_setting('app.current_tenant_id', true));

alter table credentials enable row level security;
create policy tenant_isolation on credentials for all
    using (tenant_id = current_setting('app.current_tenant_id', true))
    with check (tenant_id = current_setting('app.current_tenant_id', true));

alter table webhook_subscriptions enable row level security;
create policy tenant_isolation on webhook_subscriptions for all
    using (tenant_id = current_setting('app.current_tenant_id', true))
    with check (tenant_id = current_setting('app.current_tenant_id', true));
