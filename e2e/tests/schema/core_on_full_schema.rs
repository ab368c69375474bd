//! The event-sourced core on the full schema: rows of the new tables that point at contacts and
//! sessions (messages, notes, contact events, agent sessions, pipeline statuses, ai
//! interactions) neither block the live projections nor a replay-tool rebuild, which swaps new
//! tables in: their foreign keys move to the new tables, and the schema after a rebuild is the
//! schema before it, to the last index, policy and grant.

use std::time::Duration;

use e2e::TestSystem;
use projection_service::projections::Projection;
use reqwest::Method;
use serde_json::json;

/// Rows of every new table with a no-action foreign key to contacts or sessions.
const DEPENDENTS: [&str; 6] = [
    "messages",
    "notes",
    "contact_events",
    "agent_sessions",
    "contact_pipeline_statuses",
    "agent_ai_interactions",
];

#[tokio::test]
async fn rebuilds_and_live_projections_work_with_rows_pointing_at_contacts_and_sessions() {
    let system = TestSystem::start().await;
    let contact = system.create_contact(json!({"name": "Ada"})).await;
    let session = system.open_session(contact).await;
    system.wait_until_projected(Duration::from_secs(30)).await;

    let tenant = &system.tenant;
    sqlx::raw_sql(&format!(
        "with channel as (insert into channels (user_id, project_id, tenant_id, name, type) \
                          values ('{user}', '{project}', '{t}', 'WhatsApp', 'waha') returning id), \
              agent as (insert into agents (project_id, tenant_id, name) \
                        values ('{project}', '{t}', 'Agent') returning id), \
              pipeline as (insert into pipelines (project_id, tenant_id, name) \
                           values ('{project}', '{t}', 'Sales') returning id), \
              status as (insert into pipeline_statuses (pipeline_id, name, status_type) \
                         select id, 'New', 'open' from pipeline returning id, pipeline_id), \
              grp as (insert into message_groups (id, contact_id, channel_id, session_id, tenant_id, \
                                                  started_at, expires_at) \
                      select gen_random_uuid(), '{contact}', id, '{session}', '{t}', now(), now() \
                      from channel returning id, channel_id), \
              m as (insert into messages (tenant_id, \"timestamp\", user_id, project_id, channel_id, \
                                          contact_id, session_id, text) \
                    select '{t}', now(), '{user}', '{project}', id, '{contact}', '{session}', 'Hi' \
                    from channel returning id), \
              n as (insert into notes (contact_id, session_id, tenant_id, author_id, author_type, \
                                       author_name, content, note_type) \
                    values ('{contact}', '{session}', '{t}', '{user}', 'user', 'Owner', 'Called', \
                            'general') returning id), \
              e as (insert into contact_events (contact_id, session_id, tenant_id, event_type, \
                                                category, priority, source, occurred_at) \
                    values ('{contact}', '{session}', '{t}', 'note_added', 'note', 'normal', \
                            'system', now()) returning id), \
              s as (insert into agent_sessions (agent_id, session_id, joined_at) \
                    select id, '{session}', now() from agent returning id), \
              p as (insert into contact_pipeline_statuses (contact_id, pipeline_id, status_id, \
                                                           tenant_id, entered_at) \
                    select '{contact}', pipeline_id, id, '{t}', now() from status returning id), \
              ai as (insert into agent_ai_interactions (id, group_id, session_id, contact_id, \
                                                        channel_id, tenant_id, concatenated_content, \
                                                        message_count, enrichment_count) \
                     select gen_random_uuid(), id, '{session}', '{contact}', channel_id, '{t}', 'Hi', \
                            1, 0 from grp returning id) \
         select 1",
        user = tenant.user_id,
        project = tenant.project_id,
        t = tenant.tenant_id,
    ))
    .execute(&system.db.pool)
    .await
    .expect("rows pointing at the contact and its session");

    let before = fingerprint(&system.db.pool).await;
    let quiet = |_, _| {};
    for projections in [
        Projection::ALL.to_vec(),
        vec![Projection::Contacts],
        vec![Projection::Sessions],
    ] {
        replay_tool::rebuild(
            &system.db.pool,
            &system.keys(),
            &projections,
            None,
            100,
            &quiet,
        )
        .await
        .unwrap_or_else(|e| panic!("rebuilding {projections:?} on the full schema: {e:#}"));
    }
    for table in DEPENDENTS {
        let (rows, pointing): (i64, i64) = sqlx::query_as(&format!(
            "select count(*), count(*) filter (where {column} = $1) from {table}",
            column = if table == "agent_sessions" {
                "session_id"
            } else {
                "contact_id"
            },
        ))
        .bind(if table == "agent_sessions" {
            session
        } else {
            contact
        })
        .fetch_one(&system.db.pool)
        .await
        .unwrap();
        assert_eq!(
            (rows, pointing),
            (1, 1),
            "{table} keeps its row through the rebuilds"
        );
    }
    assert!(
        system.verify().await.is_empty(),
        "the rebuilt rows are the live rows"
    );
    assert_eq!(
        fingerprint(&system.db.pool).await,
        before,
        "the swapped-in tables carry what the live ones did"
    );
    let differences = crate::schema_differences(&system.db.pool).await;
    assert!(differences.is_empty(), "{differences:#?}");
    let left: i64 =
        sqlx::query_scalar("select count(*) from pg_namespace where nspname like 'replay%'")
            .fetch_one(&system.db.pool)
            .await
            .unwrap();
    assert_eq!(left, 0, "no schema of a rebuild is left behind");

    // The live path carries on over the same rows.
    let tagged = system
        .command(
            Method::POST,
            &format!("/contacts/{contact}/tags"),
            Some(json!({"tag": "vip"})),
        )
        .await;
    assert!(tagged.status.is_success(), "{}", tagged.body);
    let ended = system
        .command(
            Method::POST,
            &format!("/sessions/{session}/end"),
            Some(json!({"reason": "agent_close"})),
        )
        .await;
    assert!(ended.status.is_success(), "{}", ended.body);
    system.wait_until_projected(Duration::from_secs(30)).await;
    let status: String = sqlx::query_scalar("select status from sessions where id = $1")
        .bind(session)
        .fetch_one(&system.db.pool)
        .await
        .unwrap();
    assert_eq!(status, "ended");
    system.stop().await;
}

/// What the read tables carry besides their rows, one line each: indexes, constraints (their
/// own and other tables' that reference them, checked or not), policies, privileges, owner and
/// row-level security switches.
async fn fingerprint(pool: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "with t(oid) as (select unnest(array['public.contacts', 'public.sessions', \
                                             'public.domain_event_logs']::regclass[])) \
         select x from ( \
           select pg_get_indexdef(i.indexrelid) from pg_index i join t on t.oid = i.indrelid \
           union all \
           select format('%s %s %s %s', c.conrelid::regclass, c.conname, pg_get_constraintdef(c.oid), \
                         c.convalidated) \
             from pg_constraint c where c.conrelid in (select oid from t) or c.confrelid in (select oid from t) \
           union all \
           select format('policy %s %s %s %s %s %s', tablename, policyname, permissive, roles, qual, with_check) \
             from pg_policies where schemaname = 'public' \
              and tablename in ('contacts', 'sessions', 'domain_event_logs') \
           union all \
           select format('table %s %s %s %s %s', c.oid::regclass, c.relacl, c.relowner::regrole, \
                         c.relrowsecurity, c.relforcerowsecurity) \
             from pg_class c join t on t.oid = c.oid \
         ) f(x) order by x",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}
