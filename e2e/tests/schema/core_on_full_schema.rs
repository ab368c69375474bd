//! The event-sourced core on the full schema: rows of the new tables that point at contacts and
//! sessions (messages, notes, contact events, agent sessions, pipeline statuses, ai
//! interactions) neither block the live projections nor a replay-tool rebuild, which deletes and
//! re-inserts the contacts and sessions rows in one transaction: their foreign keys are
//! deferrable and checked at commit, when the rows are back.

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
    let inbound = system
        .command(
            Method::POST,
            &format!("/contacts/{contact}/messages"),
            Some(json!({"channel_type_id": 1, "from_contact": true})),
        )
        .await;
    let session = inbound.id("session_id");
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
