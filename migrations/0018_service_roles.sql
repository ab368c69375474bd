-- 0018_service_roles: what the services need to run under the roles of 0016, so that row-level
-- security binds them.
--
-- The command and query paths run as ventros_app and set app.current_tenant_id at the start of
-- each transaction. Authentication happens before the tenant is known: it reads projects (a
-- tenant table) by id for an API key, which ventros_app cannot see without a tenant. This
-- function does that one lookup as its owner (security definer) and returns only the caller's
-- access to the one project asked for; nothing else becomes visible.

create function authenticate_api_key(p_key_hash text, p_project_id uuid)
returns table (user_id uuid, project_id uuid, tenant_id text, session_timeout_minutes bigint, role text)
language sql
stable
security definer
set search_path = public, pg_temp
as $$
    select u.id, p.id, p.tenant_id::text, p.session_timeout_minutes,
           case when p.user_id = u.id then 'owner' else m.role::text end
      from user_api_keys k
      join users u on u.id = k.user_id and u.deleted_at is null and coalesce(u.status, 'active') = 'active'
      left join projects p on p.id = p_project_id and p.deleted_at is null and coalesce(p.active, true)
      left join project_members m on m.project_id = p.id and m.agent_id = u.id::text and m.deleted_at is null
     where k.key_hash = p_key_hash
       and coalesce(k.active, true)
       and k.deleted_at is null
       and (k.expires_at is null or k.expires_at > now() at time zone 'utc')
$$;

revoke all on function authenticate_api_key(text, uuid) from public;
grant execute on function authenticate_api_key(text, uuid) to ventros_app, ventros_projector;
