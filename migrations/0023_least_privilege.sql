-- 0023_least_privilege: the services log in as the roles of 0016 themselves instead of logging
-- in as the owner (a superuser, in development) and `set role`-ing to them. A statement injected
-- into a request could `reset role` back to whoever logged in; logged in as ventros_app, that is
-- ventros_app again, and this migration makes ventros_app hold only what the request paths use.
--
-- * LOGIN: the two roles may log in. They have no password here: where the server asks for one
--   (anything but trust), the operator gives them one (`alter role ... password`, README
--   "Security"). A server where an operator made the roles beforehand keeps them as they are if
--   this migration may not alter roles.
-- * ventros_app, the request paths' role:
--   - no access at all to users, user_api_keys and project_members: the API-key lookup is the
--     security-definer function authenticate_api_key (0018/0019), and nothing else on a request
--     path reads them;
--   - history is insert-only: select and insert on contact_event_store and outbox_events, never
--     update or delete. Forgetting a contact must scrub the events the previous release stored
--     in the clear; it does so through redact_forgotten_plain_events below, which can do
--     nothing else;
--   - the read models and the projection bookkeeping (contacts, sessions, domain_event_logs,
--     processed_events, dead_letter_events) are read-only: only the projection workers
--     (ventros_projector) write them.
-- * FORCE ROW LEVEL SECURITY on every table with the tenant_isolation policy: the policy binds
--   a table's owner too, unless it is a superuser or has BYPASSRLS (the login that migrates and
--   runs replay-tool must be one of these: its work spans tenants).

-- Roles are cluster-wide and many databases may migrate at once (the tests do): a role another
-- migration is altering at the same moment fails here with "tuple concurrently updated"
-- (internal_error), which is fine once that migration has made it LOGIN.
do $$
declare
    r text;
begin
    foreach r in array array['ventros_app', 'ventros_projector'] loop
        begin
            if not (select rolcanlogin from pg_roles where rolname = r) then
                execute format('alter role %I login', r);
            end if;
        exception
            when insufficient_privilege then
                raise notice '% left as it is: this login may not alter roles', r;
            when internal_error then
                if not (select rolcanlogin from pg_roles where rolname = r) then
                    raise;
                end if;
        end;
    end loop;
end
$$;

revoke all on users, user_api_keys, project_members from ventros_app;
revoke update, delete, truncate on contact_event_store, outbox_events from ventros_app;
revoke insert, update, delete, truncate
    on contacts, sessions, domain_event_logs, processed_events, dead_letter_events
    from ventros_app;

do $$
declare
    t text;
begin
    for t in
        select tablename from pg_policies
         where schemaname = 'public' and policyname = 'tenant_isolation'
    loop
        execute format('alter table %I force row level security', t);
    end loop;
end
$$;

-- Forgetting a contact (command-service, as ventros_app, in the transaction that appends
-- contact.forgotten and destroys the key) rewrites that contact's `v1` events, stored in the
-- clear by the previous release, to their redacted `v2` form, in the store and in every copy.
-- The redacted payloads are computed by the caller (event_model::personal holds the one list of
-- personal fields); this function checks that each is a redaction and nothing else:
--   * the event is in the caller's tenant (app.current_tenant_id) and still `v1`;
--   * its contact (the aggregate, or a session's contact_id) has a contact.forgotten event;
--   * the new payload's `personal` is JSON null and every other field of it is in the old
--     payload unchanged: a redaction can only take away.
-- Rows that fail a check are left alone and not counted.
create function redact_forgotten_plain_events(p_ids uuid[], p_data jsonb[])
returns bigint
language plpgsql
security definer
set search_path = public, pg_temp
as $$
declare
    tenant text := current_setting('app.current_tenant_id', true);
    rewritten bigint;
begin
    if tenant is null or tenant = '' then
        return 0;
    end if;
    with new as (
        select n.id, n.data
          from unnest(p_ids, p_data) as n(id, data)
          join contact_event_store e on e.id = n.id
         where e.tenant_id = tenant
           and e.event_version = 'v1'
           and jsonb_typeof(n.data) = 'object'
           and n.data -> 'personal' = 'null'::jsonb
           and (n.data - 'personal') <@ e.event_data
           and exists (
               select 1 from contact_event_store f
                where f.tenant_id = tenant
                  and f.event_type = 'contact.forgotten'
                  and f.aggregate_id::text = case when e.aggregate_type = 'session'
                                                  then e.metadata ->> 'contact_id'
                                                  else e.aggregate_id::text end)
    ),
    events as (
        update contact_event_store e set event_data = n.data, event_version = 'v2'
          from new n where e.id = n.id returning e.id
    ),
    outbox as (
        update outbox_events o set event_data = n.data, event_version = 'v2'
          from new n where o.event_id = n.id returning 1
    ),
    logs as (
        update domain_event_logs l set payload = n.data from new n where l.id = n.id returning 1
    ),
    dead as (
        update dead_letter_events d
           set envelope = jsonb_set(jsonb_set(d.envelope, '{data}', n.data), '{event_version}', '"v2"')
          from new n where d.event_id = n.id returning 1
    )
    select count(*) into rewritten from events;
    return rewritten;
end
$$;

revoke all on function redact_forgotten_plain_events(uuid[], jsonb[]) from public;
grant execute on function redact_forgotten_plain_events(uuid[], jsonb[]) to ventros_app;
