//! What the fault and failover tests share: steady command traffic from several clients (over
//! one command-service instance or several), a lag monitor, and the check every scenario ends
//! with: every command that got a 2xx is in the store exactly once, every event is applied
//! exactly once (`processed_events`, read-row versions), no outbox row is stuck, and the read
//! tables equal a rebuild from the store.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::Tenant;

mod end_state;
mod lag;

pub use end_state::{assert_end_state, stream_messages, wait_converged};
pub use lag::{LagMonitor, LAGGING_SECS};

/// What the clients sent and which event ids their 2xx answers named.
pub struct Traffic {
    running: Arc<AtomicBool>,
    /// The event ids of each acknowledged command that appended any.
    acked: Arc<Mutex<Vec<Vec<Uuid>>>>,
    acked_commands: Arc<AtomicUsize>,
    sent: Arc<AtomicUsize>,
    clients: Vec<JoinHandle<()>>,
}

/// The counts of a run, for the test's output and the closing note.
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    pub sent: usize,
    pub acknowledged: usize,
    pub acknowledged_events: usize,
    pub stored: usize,
    /// Events applied (by each projection: checked to be the same number).
    pub applied: usize,
    pub lost: usize,
    pub duplicates: usize,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "commands sent {}, acknowledged {} ({} events), events stored {}, applied {}, lost {}, duplicates {}",
            self.sent, self.acknowledged, self.acknowledged_events, self.stored, self.applied, self.lost, self.duplicates
        )
    }
}

impl Traffic {
    /// `clients` clients, each in a loop until [`Traffic::stop`]: create a contact, tag it, and
    /// every other round send it an inbound message (opening a session) and an agent's reply.
    /// A client whose request fails (service down, timeout) waits a little and goes on. With
    /// several command-service URLs each client sends its commands to them in turn, so a contact
    /// is created through one instance and tagged through the next.
    pub fn start(command_urls: Vec<String>, tenant: Tenant, clients: usize) -> Self {
        assert!(!command_urls.is_empty(), "a command-service URL");
        let urls = Arc::new(command_urls);
        let running = Arc::new(AtomicBool::new(true));
        let acked: Arc<Mutex<Vec<Vec<Uuid>>>> = Arc::default();
        let acked_commands = Arc::new(AtomicUsize::new(0));
        let sent = Arc::new(AtomicUsize::new(0));
        let handles = (0..clients)
            .map(|client| {
                let (running, acked, acked_commands, sent) = (
                    running.clone(),
                    acked.clone(),
                    acked_commands.clone(),
                    sent.clone(),
                );
                let (urls, tenant) = (urls.clone(), tenant.clone());
                tokio::spawn(async move {
                    let http = reqwest::Client::builder()
                        .timeout(Duration::from_secs(3))
                        .build()
                        .unwrap();
                    let turn = AtomicUsize::new(client);
                    // One command: its answer's body on a 2xx (event ids kept), None otherwise.
                    let command = |path: String, body: Value| {
                        let (http, urls, turn, tenant, acked, acked_commands, sent) = (
                            &http,
                            &urls,
                            &turn,
                            &tenant,
                            &acked,
                            &acked_commands,
                            &sent,
                        );
                        async move {
                            sent.fetch_add(1, Ordering::SeqCst);
                            let url = &urls[turn.fetch_add(1, Ordering::SeqCst) % urls.len()];
                            let answer = match http
                                .post(format!("{url}/v1/projects/{}{path}", tenant.project_id))
                                .bearer_auth(&tenant.api_key)
                                .json(&body)
                                .send()
                                .await
                            {
                                Ok(answer) => answer,
                                Err(_) => {
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                    return None;
                                }
                            };
                            if !answer.status().is_success() {
                                return None;
                            }
                            let body: Value = answer.json().await.ok()?;
                            acked_commands.fetch_add(1, Ordering::SeqCst);
                            let ids: Vec<Uuid> = body["event_ids"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|v| v.as_str().and_then(|s| Uuid::parse_str(s).ok()))
                                .collect();
                            if !ids.is_empty() {
                                acked.lock().unwrap().push(ids);
                            }
                            Some(body)
                        }
                    };
                    let mut i = 0;
                    while running.load(Ordering::SeqCst) {
                        i += 1;
                        let Some(created) = command(
                            "/contacts".into(),
                            json!({"name": format!("client{client}-{i}")}),
                        )
                        .await
                        else {
                            continue;
                        };
                        let Some(id) = created["id"].as_str().map(str::to_owned) else {
                            continue;
                        };
                        command(format!("/contacts/{id}/tags"), json!({"tag": "load"})).await;
                        if i % 2 == 0 {
                            let Some(inbound) = command(
                                format!("/contacts/{id}/messages"),
                                json!({"channel_type_id": 1, "from_contact": true}),
                            )
                            .await
                            else {
                                continue;
                            };
                            if let Some(session) = inbound["session_id"].as_str() {
                                command(
                                    format!("/sessions/{session}/messages"),
                                    json!({"from_contact": false, "agent_id": Uuid::from_u128(client as u128 + 1)}),
                                )
                                .await;
                            }
                        }
                    }
                })
            })
            .collect();
        Self {
            running,
            acked,
            acked_commands,
            sent,
            clients: handles,
        }
    }

    /// Stops the clients and waits for their last requests.
    pub async fn stop(&mut self) {
        self.running.store(false, Ordering::SeqCst);
        for client in self.clients.drain(..) {
            client.await.expect("a client panicked");
        }
    }

    pub fn acknowledged_commands(&self) -> usize {
        self.acked_commands.load(Ordering::SeqCst)
    }

    pub fn acknowledged_events(&self) -> Vec<Uuid> {
        self.acked.lock().unwrap().concat()
    }

    /// The event ids each acknowledged command answered (those that appended any).
    pub fn acknowledged_by_command(&self) -> Vec<Vec<Uuid>> {
        self.acked.lock().unwrap().clone()
    }

    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }
}
