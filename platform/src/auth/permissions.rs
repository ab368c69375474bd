//! Who may do what: the one table of permissions, the role each needs, and the permission each
//! route needs.
//!
//! Roles are ordered (viewer < agent < supervisor < admin < owner) and each role holds every
//! permission of the roles below it, so a permission is named by the least role that holds it.
//! [`AuthContext`](super::AuthContext) finds the route of each request in [`ROUTES`] by its
//! method and matched path and refuses (403, naming the permission) a caller whose role lacks
//! it; a route missing from the table is refused to everyone, so a new route cannot be served
//! unguarded. Each service's OpenAPI document says each operation's permission
//! (`x-permission`, `x-roles`), from this same table.
//!
//! Some rules need the resource as well and are checked where it is loaded: an agent ends only
//! a session assigned to them or to no one ([`Permission::EndAnySession`] lifts that), and only
//! an owner gives or takes the admin and owner roles ([`Permission::ManageAdmins`]).

use axum::http::Method;

use super::Role;

/// Something a caller may be allowed to do in a project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Read contacts, sessions, messages, histories and the event log.
    Read,
    /// Record a message (on a contact or a session).
    RecordMessages,
    /// Start a session, and end one assigned to oneself or to no one.
    ManageSessions,
    /// Set a session's summary.
    SetSummaries,
    /// Add and remove a contact's tags.
    TagContacts,
    /// Create contacts and edit their profile and picture.
    EditContacts,
    /// Assign or transfer a session's agent.
    AssignAgents,
    /// Set a session's outcome.
    SetOutcomes,
    /// End any session, whoever it is assigned to.
    EndAnySession,
    /// Delete a contact.
    DeleteContacts,
    /// Forget a contact: its personal data unreadable for good.
    ForgetContacts,
    /// Create, change and delete webhook subscriptions.
    ManageWebhooks,
    /// Apply a parked event again (the console's Retry, `replay-tool dead-letters retry`).
    RetryParkedEvents,
    /// Create, list and revoke the project's API keys.
    ManageKeys,
    /// List members, change their roles (up to supervisor) and remove them.
    ManageMembers,
    /// Give or take the admin and owner roles.
    ManageAdmins,
    /// Delete the project.
    DeleteProject,
}

impl Permission {
    /// Every permission, weakest first.
    pub const ALL: [Permission; 17] = [
        Self::Read,
        Self::RecordMessages,
        Self::ManageSessions,
        Self::SetSummaries,
        Self::TagContacts,
        Self::EditContacts,
        Self::AssignAgents,
        Self::SetOutcomes,
        Self::EndAnySession,
        Self::DeleteContacts,
        Self::ForgetContacts,
        Self::ManageWebhooks,
        Self::RetryParkedEvents,
        Self::ManageKeys,
        Self::ManageMembers,
        Self::ManageAdmins,
        Self::DeleteProject,
    ];

    /// The name problems, documents and the README use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::RecordMessages => "record_messages",
            Self::ManageSessions => "manage_sessions",
            Self::SetSummaries => "set_summaries",
            Self::TagContacts => "tag_contacts",
            Self::EditContacts => "edit_contacts",
            Self::AssignAgents => "assign_agents",
            Self::SetOutcomes => "set_outcomes",
            Self::EndAnySession => "end_any_session",
            Self::DeleteContacts => "delete_contacts",
            Self::ForgetContacts => "forget_contacts",
            Self::ManageWebhooks => "manage_webhooks",
            Self::RetryParkedEvents => "retry_parked_events",
            Self::ManageKeys => "manage_keys",
            Self::ManageMembers => "manage_members",
            Self::ManageAdmins => "manage_admins",
            Self::DeleteProject => "delete_project",
        }
    }

    /// The least role that holds it; every role above holds it too.
    pub fn least_role(self) -> Role {
        match self {
            Self::Read => Role::Viewer,
            Self::RecordMessages
            | Self::ManageSessions
            | Self::SetSummaries
            | Self::TagContacts
            | Self::EditContacts => Role::Agent,
            Self::AssignAgents | Self::SetOutcomes | Self::EndAnySession => Role::Supervisor,
            Self::DeleteContacts
            | Self::ForgetContacts
            | Self::ManageWebhooks
            | Self::RetryParkedEvents
            | Self::ManageKeys
            | Self::ManageMembers => Role::Admin,
            Self::ManageAdmins | Self::DeleteProject => Role::Owner,
        }
    }

    /// The roles that hold it, weakest first.
    pub fn roles(self) -> impl Iterator<Item = Role> {
        Role::ALL.into_iter().filter(move |r| r.grants(self))
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Role {
    /// Whether the role holds the permission.
    pub fn grants(self, permission: Permission) -> bool {
        self >= permission.least_role()
    }
}

/// A route and the permission it needs.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// The HTTP method, upper case.
    pub method: &'static str,
    /// The path as the router matches it (`{name}` for a parameter).
    pub path: &'static str,
    /// What it needs.
    pub permission: Permission,
}

const fn route(method: &'static str, path: &'static str, permission: Permission) -> Route {
    Route {
        method,
        path,
        permission,
    }
}

use Permission as P;

/// Every authenticated route of both services and the permission it needs.
pub const ROUTES: &[Route] = &[
    // command-service
    route(
        "POST",
        "/v1/projects/{project_id}/contacts",
        P::EditContacts,
    ),
    route(
        "PATCH",
        "/v1/projects/{project_id}/contacts/{contact_id}",
        P::EditContacts,
    ),
    route(
        "PUT",
        "/v1/projects/{project_id}/contacts/{contact_id}/profile-picture",
        P::EditContacts,
    ),
    route(
        "POST",
        "/v1/projects/{project_id}/contacts/{contact_id}/tags",
        P::TagContacts,
    ),
    route(
        "DELETE",
        "/v1/projects/{project_id}/contacts/{contact_id}/tags/{tag}",
        P::TagContacts,
    ),
    route(
        "DELETE",
        "/v1/projects/{project_id}/contacts/{contact_id}",
        P::DeleteContacts,
    ),
    route(
        "POST",
        "/v1/projects/{project_id}/contacts/{contact_id}/forget",
        P::ForgetContacts,
    ),
    route(
        "POST",
        "/v1/projects/{project_id}/contacts/{contact_id}/messages",
        P::RecordMessages,
    ),
    route(
        "POST",
        "/v1/projects/{project_id}/contacts/{contact_id}/sessions",
        P::ManageSessions,
    ),
    route(
        "POST",
        "/v1/projects/{project_id}/sessions/{session_id}/messages",
        P::RecordMessages,
    ),
    route(
        "POST",
        "/v1/projects/{project_id}/sessions/{session_id}/agents",
        P::AssignAgents,
    ),
    route(
        "PUT",
        "/v1/projects/{project_id}/sessions/{session_id}/summary",
        P::SetSummaries,
    ),
    route(
        "PUT",
        "/v1/projects/{project_id}/sessions/{session_id}/outcome",
        P::SetOutcomes,
    ),
    route(
        "POST",
        "/v1/projects/{project_id}/sessions/{session_id}/end",
        P::ManageSessions,
    ),
    route("POST", "/v1/projects/{project_id}/api-keys", P::ManageKeys),
    route(
        "DELETE",
        "/v1/projects/{project_id}/api-keys/{key_id}",
        P::ManageKeys,
    ),
    route(
        "PUT",
        "/v1/projects/{project_id}/members/{user_id}",
        P::ManageMembers,
    ),
    route(
        "DELETE",
        "/v1/projects/{project_id}/members/{user_id}",
        P::ManageMembers,
    ),
    route(
        "POST",
        "/v1/projects/{project_id}/webhooks",
        P::ManageWebhooks,
    ),
    route(
        "PATCH",
        "/v1/projects/{project_id}/webhooks/{webhook_id}",
        P::ManageWebhooks,
    ),
    route(
        "DELETE",
        "/v1/projects/{project_id}/webhooks/{webhook_id}",
        P::ManageWebhooks,
    ),
    route(
        "POST",
        "/v1/projects/{project_id}/webhooks/{webhook_id}/deliveries/{delivery_id}/retry",
        P::ManageWebhooks,
    ),
    // projection-service
    route("GET", "/v1/projects/{project_id}/contacts", P::Read),
    route(
        "GET",
        "/v1/projects/{project_id}/contacts/{contact_id}",
        P::Read,
    ),
    route(
        "GET",
        "/v1/projects/{project_id}/contacts/{contact_id}/sessions",
        P::Read,
    ),
    route(
        "GET",
        "/v1/projects/{project_id}/contacts/{contact_id}/events",
        P::Read,
    ),
    route(
        "GET",
        "/v1/projects/{project_id}/contacts/{contact_id}/messages",
        P::Read,
    ),
    route("GET", "/v1/projects/{project_id}/sessions", P::Read),
    route(
        "GET",
        "/v1/projects/{project_id}/sessions/{session_id}",
        P::Read,
    ),
    route(
        "GET",
        "/v1/projects/{project_id}/sessions/{session_id}/messages",
        P::Read,
    ),
    route("GET", "/v1/projects/{project_id}/messages", P::Read),
    route("GET", "/v1/projects/{project_id}/event-log", P::Read),
    route("GET", "/v1/projects/{project_id}/changes", P::Read),
    // The console's operator routes: a viewer sees the pipeline and the parked events (numbers
    // and the project's own events); retrying one writes the read tables.
    route("GET", "/v1/projects/{project_id}/me", P::Read),
    route("GET", "/v1/projects/{project_id}/ops/pipeline", P::Read),
    route("GET", "/v1/projects/{project_id}/ops/dead-letters", P::Read),
    route(
        "POST",
        "/v1/projects/{project_id}/ops/dead-letters/{dead_letter_id}/retry",
        P::RetryParkedEvents,
    ),
    route("GET", "/v1/projects/{project_id}/api-keys", P::ManageKeys),
    route("GET", "/v1/projects/{project_id}/members", P::ManageMembers),
    route(
        "GET",
        "/v1/projects/{project_id}/webhooks",
        P::ManageWebhooks,
    ),
    route(
        "GET",
        "/v1/projects/{project_id}/webhooks/{webhook_id}",
        P::ManageWebhooks,
    ),
    route(
        "GET",
        "/v1/projects/{project_id}/webhooks/{webhook_id}/deliveries",
        P::ManageWebhooks,
    ),
];

/// The permission a route needs; `None` for a route the table does not know.
pub fn required(method: &Method, path: &str) -> Option<Permission> {
    ROUTES
        .iter()
        .find(|r| r.method == method.as_str() && r.path == path)
        .map(|r| r.permission)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_holds_what_the_roles_below_it_hold() {
        for pair in Role::ALL.windows(2) {
            for p in Permission::ALL {
                assert!(
                    !pair[0].grants(p) || pair[1].grants(p),
                    "{:?} holds {p} and {:?} does not",
                    pair[0],
                    pair[1]
                );
            }
        }
        assert!(Role::Viewer.grants(Permission::Read));
        assert!(!Role::Viewer.grants(Permission::TagContacts));
        assert!(!Role::Agent.grants(Permission::AssignAgents));
        assert!(!Role::Supervisor.grants(Permission::DeleteContacts));
        assert!(!Role::Admin.grants(Permission::ManageAdmins));
        assert!(Role::Owner.grants(Permission::DeleteProject));
    }

    #[test]
    fn every_route_is_listed_once() {
        for (i, a) in ROUTES.iter().enumerate() {
            assert!(
                ROUTES[i + 1..]
                    .iter()
                    .all(|b| (a.method, a.path) != (b.method, b.path)),
                "{} {} listed twice",
                a.method,
                a.path
            );
            assert!(a.path.starts_with("/v1/projects/{project_id}/"));
        }
        assert_eq!(
            required(&Method::POST, "/v1/projects/{project_id}/contacts"),
            Some(Permission::EditContacts)
        );
        assert_eq!(
            required(&Method::GET, "/v1/projects/{project_id}/nope"),
            None
        );
    }
}
