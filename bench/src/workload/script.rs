//! The realistic mix: one virtual client's conversation with a contact, one command per step.

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use uuid::Uuid;

use super::{Api, Client, Visible};

const TAGS: [&str; 8] = [
    "vip",
    "lead",
    "customer",
    "churn-risk",
    "newsletter",
    "b2b",
    "trial",
    "support",
];
const LANGUAGES: [&str; 3] = ["en", "pt", "es"];
const SENTIMENTS: [&str; 4] = ["positive", "neutral", "negative", "mixed"];

#[derive(Debug)]
enum State {
    NewContact,
    OpenSession {
        contact: Uuid,
        sessions_left: u32,
    },
    InSession {
        contact: Uuid,
        sessions_left: u32,
        session: Uuid,
        messages_left: u32,
        sent: u32,
        agent: Uuid,
        assigned: bool,
        summarized: bool,
    },
}

/// One virtual client.
pub struct Script {
    rng: StdRng,
    state: State,
    agents: Arc<Vec<Uuid>>,
}

fn id_of(body: &Value, field: &str) -> anyhow::Result<Uuid> {
    body[field]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| anyhow::anyhow!("no {field} in {body}"))
}

fn version_of(body: &Value, field: &str) -> anyhow::Result<i64> {
    body[field]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("no {field} in {body}"))
}

impl Script {
    pub fn new(seed: u64, agents: Arc<Vec<Uuid>>) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            state: State::NewContact,
            agents,
        }
    }

    /// Sends the next command of this client's conversation; on a failure the client starts over
    /// with a new contact (so one refused command does not wedge it).
    pub async fn step(&mut self, api: &Api) -> anyhow::Result<Visible> {
        let result = self.try_step(api).await;
        if result.is_err() {
            self.state = State::NewContact;
        }
        result
    }

    async fn try_step(&mut self, api: &Api) -> anyhow::Result<Visible> {
        use reqwest::Method;
        let state = std::mem::replace(&mut self.state, State::NewContact);
        match state {
            State::NewContact => {
                let n: u64 = self.rng.random();
                let tag_count = self.rng.random_range(1..=3);
                let tags: Vec<&str> = (0..tag_count)
                    .map(|_| TAGS[self.rng.random_range(0..TAGS.len())])
                    .collect();
                let body = json!({
                    "name": format!("Bench Contact {n:x}"),
                    "email": format!("c{n:x}@bench.example.com"),
                    "phone": format!("+55119{:08}", n % 100_000_000),
                    "external_id": format!("crm-{n:x}"),
                    "source_channel": "whatsapp",
                    "language": LANGUAGES[self.rng.random_range(0..LANGUAGES.len())],
                    "timezone": "America/Sao_Paulo",
                    "tags": tags,
                });
                let reply = api.send(Method::POST, "/contacts", &body).await?;
                let contact = id_of(&reply, "id")?;
                self.state = State::OpenSession {
                    contact,
                    sessions_left: self.rng.random_range(1..=2),
                };
                Ok(Visible::Contact(contact, version_of(&reply, "version")?))
            }
            State::OpenSession {
                contact,
                sessions_left,
            } => {
                let body = json!({"channel_type_id": 1, "from_contact": true});
                let reply = api
                    .send(
                        Method::POST,
                        &format!("/contacts/{contact}/messages"),
                        &body,
                    )
                    .await?;
                let session = id_of(&reply, "session_id")?;
                let version = version_of(&reply, "session_version")?;
                self.state = State::InSession {
                    contact,
                    sessions_left,
                    session,
                    messages_left: self.rng.random_range(5..=50) - 1,
                    sent: 1,
                    agent: self.agents[self.rng.random_range(0..self.agents.len())],
                    assigned: false,
                    summarized: false,
                };
                Ok(Visible::Session(session, version))
            }
            State::InSession {
                contact,
                sessions_left,
                session,
                messages_left,
                sent,
                agent,
                assigned,
                summarized,
            } => {
                let path = format!("/sessions/{session}");
                let mut next = State::InSession {
                    contact,
                    sessions_left,
                    session,
                    messages_left,
                    sent,
                    agent,
                    assigned,
                    summarized,
                };
                let reply = if !assigned && sent >= 2 {
                    let body = json!({"agent_id": agent, "source": "automatic", "strategy": "round_robin"});
                    if let State::InSession { assigned, .. } = &mut next {
                        *assigned = true;
                    }
                    api.send(Method::POST, &format!("{path}/agents"), &body)
                        .await?
                } else if messages_left > 0 {
                    // The contact opened; the agent answers second; then either side.
                    let from_contact = sent != 1 && self.rng.random_bool(0.5);
                    let body = if from_contact {
                        json!({"from_contact": true})
                    } else {
                        json!({"from_contact": false, "agent_id": agent})
                    };
                    if let State::InSession {
                        messages_left,
                        sent,
                        ..
                    } = &mut next
                    {
                        *messages_left -= 1;
                        *sent += 1;
                    }
                    api.send(Method::POST, &format!("{path}/messages"), &body)
                        .await?
                } else if !summarized {
                    let body = json!({
                        "summary": format!("Talked about pricing and onboarding ({sent} messages)"),
                        "sentiment": SENTIMENTS[self.rng.random_range(0..SENTIMENTS.len())],
                        "sentiment_score": self.rng.random_range(-1.0..=1.0f64),
                        "topics": ["pricing", "onboarding"],
                        "next_steps": ["send proposal"],
                        "key_entities": {"plan": "pro", "seats": 12},
                    });
                    if let State::InSession { summarized, .. } = &mut next {
                        *summarized = true;
                    }
                    api.send(Method::PUT, &format!("{path}/summary"), &body)
                        .await?
                } else {
                    let body = json!({"reason": "agent_close"});
                    let reply = api
                        .send(Method::POST, &format!("{path}/end"), &body)
                        .await?;
                    next = if sessions_left > 1 {
                        State::OpenSession {
                            contact,
                            sessions_left: sessions_left - 1,
                        }
                    } else {
                        State::NewContact
                    };
                    reply
                };
                self.state = next;
                Ok(Visible::Session(session, version_of(&reply, "version")?))
            }
        }
    }
}

/// The realistic mix: a [`Script`] against our command API.
pub(super) struct Conversation {
    pub(super) script: Script,
    pub(super) api: Api,
}

impl Client for Conversation {
    async fn send_next(&mut self) -> anyhow::Result<Option<Visible>> {
        self.script.step(&self.api).await.map(Some)
    }
}

pub fn agents() -> Arc<Vec<Uuid>> {
    Arc::new((0..20).map(|_| Uuid::new_v4()).collect())
}
