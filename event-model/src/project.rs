//! A project's own stream: the changes to who may call it (API keys and members), kept in the
//! same history as the contacts' so that the audit trail (`domain_event_logs`, `/event-log`), a
//! rebuild and every later reader of the stream see them. The state itself lives in the
//! identity tables; these events record each change, who made it and with which key.
//!
//! The stream's id is the project's id. Nothing here is personal data of a contact, so nothing
//! is sealed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A change to who may call the project. Every variant names the key that made it (`by_key_id`;
/// the acting user is the event's `user_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ProjectEvent {
    /// `project.api_key_created`: a key made for the project.
    #[serde(rename = "project.api_key_created")]
    ApiKeyCreated {
        /// The new key's id.
        key_id: Uuid,
        /// What it is for.
        name: String,
        /// The most it may do.
        role: String,
        /// Its first characters (never the secret).
        prefix: String,
        /// The user whose key it is.
        user_id: Uuid,
        /// When it stops working (none: never).
        expires_at: Option<DateTime<Utc>>,
        /// The key that made it.
        by_key_id: Uuid,
    },
    /// `project.api_key_revoked`: one of the project's keys revoked.
    #[serde(rename = "project.api_key_revoked")]
    ApiKeyRevoked {
        /// The key revoked.
        key_id: Uuid,
        /// Its name.
        name: String,
        /// Its role (none: a key of the previous release).
        role: Option<String>,
        /// The key that revoked it.
        by_key_id: Uuid,
    },
    /// `project.member_role_set`: a user added to the project, or their role changed.
    #[serde(rename = "project.member_role_set")]
    MemberRoleSet {
        /// The member.
        user_id: Uuid,
        /// Their role now.
        role: String,
        /// Their role before (none: they were not a member).
        previous_role: Option<String>,
        /// The key that changed it.
        by_key_id: Uuid,
    },
    /// `project.member_removed`: a user removed from the project, with their keys for it.
    #[serde(rename = "project.member_removed")]
    MemberRemoved {
        /// The former member.
        user_id: Uuid,
        /// The role they had.
        previous_role: String,
        /// The key that removed them.
        by_key_id: Uuid,
    },
}

impl ProjectEvent {
    /// The event's stored name (`project.<verb>`).
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::ApiKeyCreated { .. } => "project.api_key_created",
            Self::ApiKeyRevoked { .. } => "project.api_key_revoked",
            Self::MemberRoleSet { .. } => "project.member_role_set",
            Self::MemberRemoved { .. } => "project.member_removed",
        }
    }
}
