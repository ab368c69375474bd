//! The session-timeout sweeper: ends sessions idle for longer than their timeout.
//!
//! Candidates come from the `sessions` read table (cheap, indexed, possibly a little stale); each
//! is ended through the normal command path with `EndIfIdle`, which re-checks the rule on the
//! aggregate itself, so a message that arrived after the read model was built keeps its session
//! open.

use std::time::Duration;

use chrono::NaiveDateTime;
use event_model::values::SessionTimeout;
use event_model::SessionCommand;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::commands::{Actor, Clock, Command, CommandError, CommandHandler, CommandMeta};

#[derive(Clone)]
pub struct TimeoutSweeper {
    pub pool: PgPool,
    pub handler: CommandHandler,
    pub clock: Clock,
    pub interval: Duration,
}

struct Candidate {
    id: Uuid,
    tenant_id: String,
    project_id: Uuid,
    session_timeout_minutes: i64,
}

impl TimeoutSweeper {
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.cancelled() => return,
            }
            match self.sweep_once().await {
                Ok(0) => {}
                Ok(ended) => tracing::info!(ended, "ended idle sessions"),
                Err(e) => tracing::warn!(error = %e, "session sweep failed"),
            }
        }
    }

    /// Ends every session idle past its timeout; returns how many it ended.
    pub async fn sweep_once(&self) -> anyhow::Result<usize> {
        let now: NaiveDateTime = (self.clock)().naive_utc();
        let candidates = sqlx::query_as!(
            Candidate,
            r#"select s.id, s.tenant_id, c.project_id as "project_id!", p.session_timeout_minutes
                 from sessions s
                 join contacts c on c.id = s.contact_id
                 join projects p on p.id = c.project_id
                where s.status = 'active'
                  and s.last_activity_at + make_interval(secs => coalesce(s.timeout_duration, $2) / 1e9) < $1
              order by s.last_activity_at limit 500"#,
            now,
            SessionTimeout::DEFAULT.nanos(),
        )
        .fetch_all(&self.pool)
        .await?;
        let mut ended = 0;
        for candidate in candidates {
            let actor = Actor {
                tenant_id: candidate.tenant_id,
                project_id: candidate.project_id,
                user_id: None,
                session_timeout: SessionTimeout::from_minutes(candidate.session_timeout_minutes),
                ends_any_session: true,
            };
            let meta = CommandMeta {
                correlation_id: Uuid::now_v7(),
                causation_id: Uuid::now_v7(),
                if_match: None,
            };
            let command = Command::Session {
                session_id: candidate.id,
                command: SessionCommand::EndIfIdle,
            };
            match self.handler.execute(&actor, meta, command, None).await {
                Ok(_) => ended += 1,
                // Already ended, or active again since the read model saw it: nothing to do.
                Err(CommandError::Domain(_)) | Err(CommandError::NotFound(_)) => {}
                Err(e) => {
                    tracing::warn!(session_id = %candidate.id, error = %e, "could not end idle session")
                }
            }
        }
        Ok(ended)
    }
}
