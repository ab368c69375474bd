//! Keys in use are remembered by each service instance (`API_KEY_CACHE_CAPACITY`), so a request
//! costs no lookup; any change to users, keys, projects or members empties the cache through a
//! notification, so a revoked key is refused within a second, also after the listener lost its
//! connection.

use std::time::{Duration, Instant};

use e2e::{Tenant, TestSystem};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Revokes every key of a user (`$1`), as an operator would in the database.
const DEACTIVATE_KEYS: &str = "update user_api_keys set active = false where user_id = $1";

/// How long until `tenant`'s requests get `status` from both services (a read, and a command on
/// a contact that does not exist, which changes nothing either way); panics after 1 s.
async fn until_both_answer(system: &TestSystem, tenant: &Tenant, status: StatusCode) -> Duration {
    let started = Instant::now();
    let contact = uuid::Uuid::new_v4();
    let project = format!("/v1/projects/{}", tenant.project_id);
    for (method, url, body) in [
        (
            Method::GET,
            format!("{}{project}/contacts", system.query_url),
            None,
        ),
        (
            Method::POST,
            format!("{}{project}/contacts/{contact}/tags", system.command_url),
            Some(json!({"tag": "probe"})),
        ),
    ] {
        let seen = e2e::wait_until(Duration::from_secs(1), || async {
            let reply = system
                .send(
                    method.clone(),
                    &url,
                    Some(&tenant.api_key),
                    body.as_ref(),
                    &[],
                )
                .await;
            // With the key accepted the read is 200, the command on no contact 404.
            let accepted = matches!(reply.status, StatusCode::OK | StatusCode::NOT_FOUND);
            match status {
                StatusCode::OK => accepted,
                other => reply.status == other,
            }
        })
        .await;
        assert!(seen, "{url}: not {status} within 1 s of the change");
    }
    started.elapsed()
}

#[tokio::test]
async fn a_key_in_use_costs_one_lookup_and_a_revoked_one_is_refused_within_a_second() {
    let system = TestSystem::start().await;
    let invalidations =
        || system.sample(&system.command_url, "auth_cache_invalidations_total", &[""]);
    let heard_before = invalidations().await;
    let agent = system.add_member(&system.tenant, "agent").await;
    // Adding the member notifies both services' caches (the counter is the test process's, so
    // both listeners count in it); a notification heard after the first lookup would empty the
    // cache and cost a second one, so the count starts once both have heard it.
    assert!(
        e2e::wait_until(Duration::from_secs(1), || async {
            invalidations().await >= heard_before + 2.0
        })
        .await,
        "both services hear that a member was added"
    );
    let lookups = |base: String| {
        let system = &system;
        async move {
            system
                .sample(&base, "auth_key_lookups_total", &["result=\"found\""])
                .await
        }
    };
    let before = lookups(system.query_url.clone()).await;
    for _ in 0..30 {
        assert_eq!(
            system.query_as(&agent, "/contacts").await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        lookups(system.query_url.clone()).await - before,
        1.0,
        "30 requests with one key: one lookup"
    );

    let mut now = StatusCode::OK;
    for (what, sql, after) in [
        ("inactive", DEACTIVATE_KEYS, StatusCode::UNAUTHORIZED),
        (
            "active again",
            "update user_api_keys set active = true where user_id = $1",
            StatusCode::OK,
        ),
        (
            "expired",
            "update user_api_keys set expires_at = now() at time zone 'utc' - interval '1 minute' \
              where user_id = $1",
            StatusCode::UNAUTHORIZED,
        ),
        (
            "renewed",
            "update user_api_keys set expires_at = null where user_id = $1",
            StatusCode::OK,
        ),
        (
            "user suspended",
            "update users set status = 'suspended' where id = $1",
            StatusCode::UNAUTHORIZED,
        ),
    ] {
        // What the services answer now is in their caches (a grant, or a refusal).
        until_both_answer(&system, &agent, now).await;
        sqlx::query(sql)
            .bind(agent.user_id)
            .execute(&system.db.pool)
            .await
            .unwrap();
        let took = until_both_answer(&system, &agent, after).await;
        assert!(took < Duration::from_secs(1), "{what}: {took:?}");
        now = after;
    }
    // Six changes (the member added, then five), each heard by both services.
    assert!(invalidations().await >= heard_before + 12.0);
    system.stop().await;
}

#[tokio::test]
async fn a_role_taken_away_applies_within_a_second() {
    let system = TestSystem::start().await;
    let agent = system.add_member(&system.tenant, "agent").await;
    let contact = system.create_contact(json!({"name": "Ada"})).await;
    let tag = |tag: &'static str| {
        let (system, agent) = (&system, &agent);
        async move {
            system
                .command_as(
                    agent,
                    Method::POST,
                    &format!("/contacts/{contact}/tags"),
                    Some(json!({"tag": tag})),
                    &[],
                )
                .await
                .status
        }
    };
    assert_eq!(tag("first").await, StatusCode::OK);
    sqlx::query("update project_members set role = 'viewer' where agent_id = $1")
        .bind(agent.user_id.to_string())
        .execute(&system.db.pool)
        .await
        .unwrap();
    // Probed with a command on a contact that does not exist (404 while the role may write,
    // 403 once it may not).
    let url = format!(
        "{}/v1/projects/{}/contacts/{}/tags",
        system.command_url,
        system.tenant.project_id,
        uuid::Uuid::new_v4()
    );
    let refused = e2e::wait_until(Duration::from_secs(1), || async {
        system
            .send(
                Method::POST,
                &url,
                Some(&agent.api_key),
                Some(&json!({"tag": "probe"})),
                &[],
            )
            .await
            .status
            == StatusCode::FORBIDDEN
    })
    .await;
    assert!(refused, "still an agent 1 s after becoming a viewer");
    assert_eq!(tag("second").await, StatusCode::FORBIDDEN);
    system.stop().await;
}

#[tokio::test]
async fn after_its_listener_loses_the_connection_a_revocation_still_applies_within_a_second() {
    let system = TestSystem::start().await;
    let agent = system.add_member(&system.tenant, "agent").await;
    until_both_answer(&system, &agent, StatusCode::OK).await;
    // Cut every listening connection of the services (both instances' caches).
    let cut: Vec<bool> = sqlx::query_scalar(
        "select pg_terminate_backend(pid) from pg_stat_activity \
          where datname = current_database() and query ilike 'listen%ventros_access_changed%'",
    )
    .fetch_all(&system.db.pool)
    .await
    .unwrap();
    assert_eq!(cut, [true, true], "one listener per service");
    sqlx::query(DEACTIVATE_KEYS)
        .bind(agent.user_id)
        .execute(&system.db.pool)
        .await
        .unwrap();
    let took = until_both_answer(&system, &agent, StatusCode::UNAUTHORIZED).await;
    assert!(took < Duration::from_secs(1), "{took:?}");
    // And the listeners are back: the cache serves again.
    let listening = e2e::wait_until(Duration::from_secs(5), || async {
        system
            .count(
                "select count(*) from pg_stat_activity where datname = current_database() \
                   and query ilike 'listen%ventros_access_changed%'",
            )
            .await
            == 2
    })
    .await;
    assert!(listening);
    system.stop().await;
}
