//! A [`TestSystem`]'s requests and checks: HTTP calls, metrics, counts and waits.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use uuid::Uuid;

use crate::db::Carried;
use crate::{sample, wait_until, Login, Tenant, TestSystem};

/// An HTTP answer, read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn id(&self, field: &str) -> Uuid {
        self.body[field]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .unwrap_or_else(|| {
                panic!("no UUID in {field:?} of {}", self.body);
            })
    }

    /// Asserts an `application/problem+json` answer with this status.
    pub fn assert_problem(&self, status: u16) -> &Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.body
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "body: {}",
            self.body
        );
        assert_eq!(
            self.body["status"], status,
            "problem status field: {}",
            self.body
        );
        assert!(
            self.body["title"].is_string()
                && self.body["detail"].is_string()
                && self.body["type"].is_string()
        );
        self
    }
}

impl TestSystem {
    /// The Prometheus text of the service at `base_url`.
    pub async fn metrics(&self, base_url: &str) -> String {
        self.http
            .get(format!("{base_url}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// A Prometheus sample of the service at `base_url` (see [`sample`]).
    pub async fn sample(&self, base_url: &str, family: &str, labels: &[&str]) -> f64 {
        sample(&self.metrics(base_url).await, family, labels)
    }

    /// Sends a request and reads the whole answer.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        key: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = self.http.request(method, url);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request");
        Self::read(response).await
    }

    pub async fn read(response: reqwest::Response) -> Reply {
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A command of tenant A: `path` is relative to `/v1/projects/{project}`.
    pub async fn command(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.command_as(&self.tenant, method, path, body, &[]).await
    }

    pub async fn command_as(
        &self,
        tenant: &Tenant,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let url = format!(
            "{}/v1/projects/{}{path}",
            self.command_url, tenant.project_id
        );
        self.send(method, &url, Some(&tenant.api_key), body.as_ref(), headers)
            .await
    }

    /// A query of tenant A: `path` is relative to `/v1/projects/{project}`.
    pub async fn query(&self, path: &str) -> Reply {
        self.query_as(&self.tenant, path).await
    }

    pub async fn query_as(&self, tenant: &Tenant, path: &str) -> Reply {
        let url = format!("{}/v1/projects/{}{path}", self.query_url, tenant.project_id);
        self.send(Method::GET, &url, Some(&tenant.api_key), None, &[])
            .await
    }

    /// A contact's stored events, as the store holds them (sealed fields and all).
    pub async fn contact_events(&self, contact: Uuid) -> Vec<event_model::EventEnvelope> {
        platform::event_store::EventStore::new(self.db.pool.clone())
            .load_stream(
                &self.db.pool,
                &self.tenant.tenant_id,
                event_model::AggregateType::Contact,
                contact,
                0,
            )
            .await
            .expect("the contact's stream")
    }

    /// Creates a contact of tenant A and returns its id.
    pub async fn create_contact(&self, body: Value) -> Uuid {
        let reply = self.command(Method::POST, "/contacts", Some(body)).await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "create contact: {}",
            reply.body
        );
        reply.id("id")
    }

    /// Records an inbound message for a contact of tenant A on channel 1, which opens a session;
    /// returns the session's id.
    pub async fn open_session(&self, contact: Uuid) -> Uuid {
        let reply = self
            .command(
                Method::POST,
                &format!("/contacts/{contact}/messages"),
                Some(serde_json::json!({"channel_type_id": 1, "from_contact": true})),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "inbound message: {}",
            reply.body
        );
        reply.id("session_id")
    }

    /// Polls `check` until it holds or `within` passes (for what has no `min_version`).
    pub async fn eventually<F, Fut>(&self, within: Duration, what: &str, check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        assert!(
            wait_until(within, check).await,
            "timed out waiting for: {what}"
        );
    }

    /// One `count(*)` statement's answer ([`crate::db::count`]).
    pub async fn count(&self, sql: &str) -> i64 {
        crate::db::count(&self.db.pool, sql).await
    }

    /// How many rows `relation` holds ([`crate::db::rows`]).
    pub async fn rows(&self, relation: &str) -> i64 {
        crate::db::rows(&self.db.pool, relation).await
    }

    /// How far the pipeline has carried what is stored ([`Carried`]).
    pub async fn carried(&self) -> Carried {
        Carried::read(&self.db.pool).await
    }

    /// Waits until every stored event is published, and every projection has applied it.
    pub async fn wait_until_projected(&self, within: Duration) {
        self.eventually(within, "every event published and projected", || async {
            self.carried().await.converged()
        })
        .await;
    }

    /// Waits until every partition's consumer has nothing pending and nothing unacknowledged.
    pub async fn wait_until_consumed(&self, within: Duration) {
        let js = async_nats::jetstream::new(self.stream.admin_client().await);
        let stream = js.get_stream(&self.stream.name).await.expect("stream");
        self.eventually(within, "every consumer drained", || {
            crate::nats::consumers_drained(&stream, self.options.partitions)
        })
        .await;
    }

    /// The stream's settings, for publishing as the relay does.
    pub fn stream_settings(&self) -> platform::nats::StreamSettings {
        self.settings_as(Login::Admin).stream()
    }

    /// Sends a raw body with a content type (for malformed input).
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Reply {
        let url = format!(
            "{}/v1/projects/{}{path}",
            self.command_url, self.tenant.project_id
        );
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(&self.tenant.api_key)
            .body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        Self::read(request.send().await.expect("request")).await
    }

    /// Rebuilds every projection in a rolled-back transaction and diffs it against the live
    /// tables: empty = identical, column for column.
    pub async fn verify(&self) -> Vec<replay_tool::TableDiff> {
        replay_tool::verify(&self.db.pool, &self.keys(), None, 500, &|_, _| {})
            .await
            .expect("verify")
    }
}
