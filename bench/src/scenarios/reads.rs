//! Scenario 9: reading the past and reading conversations, over HTTP from projection-service:
//! `GET /contacts/{id}?as_of_version=N` on a contact of 10,000 events with a snapshot every 100
//! (against the same contact's present row from the read model), and a page of 50 messages of a
//! session with 1M messages in the table (against the page's own SQL on one connection).

use std::time::Instant;

use e2e::{Options, TestSystem};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use uuid::Uuid;

use crate::report::{number, Percentiles, Row};
use crate::{long_stream, Sizes};

use super::{analyze, progress};

/// Sessions the messages are spread over (each with the same number of messages).
const SESSIONS: usize = 10_000;

struct Reader {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Reader {
    /// GETs `path`, which must answer 200; its body.
    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "{path}: {status} {body}");
        Ok(body)
    }

    /// Times `reads` GETs of the paths `path` gives (after a few untimed ones), checking each
    /// answer with `check`.
    async fn time(
        &self,
        reads: usize,
        mut path: impl FnMut() -> String,
        check: impl Fn(&str, &Value) -> anyhow::Result<()>,
    ) -> anyhow::Result<Percentiles> {
        for _ in 0..20 {
            let p = path();
            check(&p, &self.get(&p).await?)?;
        }
        let mut samples = Vec::with_capacity(reads);
        for _ in 0..reads {
            let p = path();
            let started = Instant::now();
            let body = self.get(&p).await?;
            samples.push(started.elapsed());
            check(&p, &body)?;
        }
        Ok(Percentiles::of(&mut samples))
    }
}

pub(super) async fn reads(sizes: &Sizes) -> anyhow::Result<Vec<Row>> {
    progress("9: starting the services for the history and conversation reads");
    let system = TestSystem::start_with(Options {
        snapshot_every: 100,
        ..Options::default()
    })
    .await;
    let reader = Reader {
        http: crate::workload::http_client(),
        base: format!(
            "{}/v1/projects/{}",
            system.query_url, system.tenant.project_id
        ),
        key: system.tenant.api_key.clone(),
    };
    let mut rows = as_of_rows(sizes, &system, &reader).await?;
    rows.extend(page_rows(sizes, &system, &reader).await?);
    system.stop().await;
    Ok(rows)
}

async fn as_of_rows(
    sizes: &Sizes,
    system: &TestSystem,
    reader: &Reader,
) -> anyhow::Result<Vec<Row>> {
    let n = sizes.long_stream_events;
    progress(format!(
        "9: as_of_version on a contact of {} events",
        number(n as f64)
    ));
    let actor = command_service::commands::Actor {
        tenant_id: system.tenant.tenant_id.clone(),
        project_id: system.tenant.project_id,
        user_id: Some(system.tenant.user_id),
        session_timeout: event_model::values::SessionTimeout::from_minutes(30),
        ends_any_session: true,
    };
    let contact = long_stream::write_contact(&system.db.pool, &actor, n, Some(100)).await?;
    // Its present row, for the baseline read (written as the projection would, minus the fold).
    sqlx::query(
        "insert into contacts (id, project_id, tenant_id, name, tags, version, language) \
         values ($1, $2, $3, 'Grace Hopper', '[]', $4, 'en')",
    )
    .bind(contact)
    .bind(actor.project_id)
    .bind(&actor.tenant_id)
    .bind(n)
    .execute(&system.db.pool)
    .await?;
    analyze(&system.db.pool).await?;
    let mut rng = StdRng::seed_from_u64(9);
    let past = reader
        .time(
            sizes.history_reads,
            || {
                let v = rng.random_range(1..=n);
                format!("/contacts/{contact}?as_of_version={v}")
            },
            |path, body| {
                let asked: i64 = path.rsplit('=').next().unwrap_or_default().parse()?;
                anyhow::ensure!(
                    body["as_of_version"] == asked && body["version"] == asked,
                    "{path}: {body}"
                );
                Ok(())
            },
        )
        .await?;
    let present = reader
        .time(
            sizes.history_reads,
            || format!("/contacts/{contact}"),
            |path, body| {
                anyhow::ensure!(body["version"] == n, "{path}: {body}");
                Ok(())
            },
        )
        .await?;
    Ok(vec![
        Row::new(
            "9a",
            format!(
                "GET /contacts/{{id}}?as_of_version=N, N random in 1..{}, a contact of {} events with a snapshot every 100, {} reads over HTTP (vs GET /contacts/{{id}}: its present row from the read model)",
                number(n as f64),
                number(n as f64),
                sizes.history_reads
            ),
        )
        .ours(past.mean_ms, "ms mean")
        .baseline(present.mean_ms, "ms mean")
        .ratio(past.mean_ms / present.mean_ms)
        .latency(&past)
        .target("≤ 2 ms (mean)", past.mean_ms <= 2.0),
    ])
}

/// Fills `messages` with `total` messages over [`SESSIONS`] sessions of one contact each (the
/// read rows they hang on included), as the projection would have written them.
async fn fill_messages(system: &TestSystem, total: usize) -> anyhow::Result<()> {
    let per_session = (total / SESSIONS).max(1) as i64;
    let tenant = &system.tenant;
    sqlx::raw_sql(&format!(
        "insert into contacts (id, project_id, tenant_id, name, tags, version, language)
           select ('00000000-0000-7000-8000-' || lpad(to_hex(g), 12, '0'))::uuid,
                  '{project}', '{tenant_id}', 'Contact ' || g, '[]', 1, 'en'
             from generate_series(1, {SESSIONS}) g;
         insert into sessions (id, contact_id, tenant_id, channel_type_id, started_at,
                               last_activity_at, status, message_count, version)
           select ('00000000-0000-7000-9000-' || lpad(to_hex(g), 12, '0'))::uuid,
                  ('00000000-0000-7000-8000-' || lpad(to_hex(g), 12, '0'))::uuid,
                  '{tenant_id}', 1, now() - interval '1 day', now(), 'active', {per_session}, 1
             from generate_series(1, {SESSIONS}) g;
         insert into messages (id, tenant_id, \"timestamp\", user_id, project_id, channel_type_id,
                               from_me, contact_id, session_id, content_type, text, status,
                               created_at, updated_at)
           select gen_random_uuid(), '{tenant_id}',
                  now() - interval '1 day' + (m || ' seconds')::interval, '{user}', '{project}',
                  1, m % 2 = 1,
                  ('00000000-0000-7000-8000-' || lpad(to_hex(s), 12, '0'))::uuid,
                  ('00000000-0000-7000-9000-' || lpad(to_hex(s), 12, '0'))::uuid,
                  'text', 'message ' || m || ' about order ' || (s * 7 + m) % 5000, 'sent',
                  now(), now()
             from generate_series(1, {SESSIONS}) s, generate_series(1, {per_session}) m;",
        project = tenant.project_id,
        tenant_id = tenant.tenant_id,
        user = tenant.user_id,
    ))
    .execute(&system.db.pool)
    .await?;
    analyze(&system.db.pool).await
}

async fn page_rows(
    sizes: &Sizes,
    system: &TestSystem,
    reader: &Reader,
) -> anyhow::Result<Vec<Row>> {
    progress(format!(
        "9: filling messages with {} rows",
        number(sizes.messages_in_table as f64)
    ));
    let filled = Instant::now();
    fill_messages(system, sizes.messages_in_table).await?;
    progress(format!(
        "9: filled in {:.1} s; pages of 50",
        filled.elapsed().as_secs_f64()
    ));
    let session = |g: usize| -> Uuid {
        format!("00000000-0000-7000-9000-{g:012x}")
            .parse()
            .expect("a uuid")
    };
    // A page anchored after a message of the session: the ids of a sample of them.
    let anchors: Vec<(Uuid, Uuid)> =
        sqlx::query_as("select session_id, id from messages tablesample system (1) limit 2000")
            .fetch_all(&system.db.pool)
            .await?;
    anyhow::ensure!(!anchors.is_empty(), "no messages to page from");
    let mut rng = StdRng::seed_from_u64(10);
    let mut pick = || -> (Uuid, Option<Uuid>) {
        if rng.random_bool(0.5) {
            (session(rng.random_range(1..=SESSIONS)), None)
        } else {
            let (s, m) = anchors[rng.random_range(0..anchors.len())];
            (s, Some(m))
        }
    };
    let picks: Vec<(Uuid, Option<Uuid>)> = (0..sizes.history_reads + 20).map(|_| pick()).collect();
    let mut http_picks = picks.iter().cycle();
    let page = reader
        .time(
            sizes.history_reads,
            || {
                let (s, after) = http_picks.next().expect("cycled");
                match after {
                    Some(m) => format!("/sessions/{s}/messages?limit=50&after={m}"),
                    None => format!("/sessions/{s}/messages?limit=50"),
                }
            },
            |path, body| {
                let items = body["items"].as_array().map_or(0, Vec::len);
                anyhow::ensure!(items > 0 || path.contains("after="), "{path}: {body}");
                Ok(())
            },
        )
        .await?;
    // The page's own statement, over one connection of the owner (no HTTP, no auth, no JSON).
    let mut conn = system.db.pool.acquire().await?;
    let mut samples = Vec::with_capacity(sizes.history_reads);
    for (s, after) in picks.iter().cycle().take(sizes.history_reads) {
        let started = Instant::now();
        let _rows: Vec<(Uuid,)> = sqlx::query_as(
            "select m.id from messages m
              where m.session_id = $1
                and ($2::uuid is null or (m.\"timestamp\", m.id) >
                     (select a.\"timestamp\", a.id from messages a where a.id = $2))
              order by m.\"timestamp\", m.id limit 51",
        )
        .bind(s)
        .bind(after)
        .fetch_all(&mut *conn)
        .await?;
        samples.push(started.elapsed());
    }
    let raw = Percentiles::of(&mut samples);
    Ok(vec![Row::new(
        "9b",
        format!(
            "GET /sessions/{{id}}/messages?limit=50 (half of them after a message), {} messages in the table over {} sessions, {} reads over HTTP (vs the page's SQL alone on one connection)",
            number(sizes.messages_in_table as f64),
            number(SESSIONS as f64),
            sizes.history_reads
        ),
    )
    .ours(page.p99_ms, "ms p99")
    .baseline(raw.p99_ms, "ms p99")
    .ratio(page.p99_ms / raw.p99_ms)
    .latency(&page)
    .target("≤ 5 ms (p99)", page.p99_ms <= 5.0)])
}
