//! libpq's multi-host connection URLs, which sqlx does not read: `postgres://u@h1:p1,h2:p2/db
//! ?target_session_attrs=read-write` names several servers and which kind of server a
//! connection must land on. This module only parses and decides; [`super::failover`] watches
//! the hosts and steers a pool's new connections.

use std::str::FromStr;

use anyhow::{bail, Context as _};
use sqlx::postgres::PgConnectOptions;

/// What a connection's server must be, with libpq's names and meaning
/// (`target_session_attrs`): the hosts are tried in the URL's order and the first that
/// qualifies is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAttrs {
    /// Any server that answers (libpq's default).
    Any,
    /// A server whose sessions may write (`transaction_read_only` off): the primary.
    ReadWrite,
    /// A server whose sessions may not write.
    ReadOnly,
    /// A server not in recovery.
    Primary,
    /// A server in recovery (a standby).
    Standby,
    /// A standby if one answers, else any server.
    PreferStandby,
}

impl FromStr for SessionAttrs {
    type Err = anyhow::Error;

    fn from_str(value: &str) -> anyhow::Result<Self> {
        Ok(match value {
            "any" => Self::Any,
            "read-write" => Self::ReadWrite,
            "read-only" => Self::ReadOnly,
            "primary" => Self::Primary,
            "standby" => Self::Standby,
            "prefer-standby" => Self::PreferStandby,
            other => bail!(
                "target_session_attrs={other:?} is not one of any, read-write, read-only, \
                 primary, standby, prefer-standby"
            ),
        })
    }
}

impl std::fmt::Display for SessionAttrs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Any => "any",
            Self::ReadWrite => "read-write",
            Self::ReadOnly => "read-only",
            Self::Primary => "primary",
            Self::Standby => "standby",
            Self::PreferStandby => "prefer-standby",
        })
    }
}

/// What a server said about itself when asked (`pg_is_in_recovery()`,
/// `transaction_read_only`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostState {
    /// A standby replaying the primary's WAL.
    pub in_recovery: bool,
    /// Its sessions may not write (every standby's, and a primary's set read-only).
    pub read_only: bool,
}

impl HostState {
    /// A primary that takes writes.
    pub const PRIMARY: HostState = HostState {
        in_recovery: false,
        read_only: false,
    };

    /// A standby.
    pub const STANDBY: HostState = HostState {
        in_recovery: true,
        read_only: true,
    };
}

impl SessionAttrs {
    /// Whether a connection to a server in `state` may be kept. `prefer-standby` keeps any: it
    /// only prefers, when it chooses (see [`SessionAttrs::choose`]).
    pub fn accepts(self, state: HostState) -> bool {
        match self {
            Self::Any | Self::PreferStandby => true,
            Self::ReadWrite => !state.read_only,
            Self::ReadOnly => state.read_only,
            Self::Primary => !state.in_recovery,
            Self::Standby => state.in_recovery,
        }
    }

    /// The host new connections go to, given each host's state in the URL's order (`None`:
    /// it did not answer): the first that qualifies, as libpq tries them; `None` when none does.
    pub fn choose(self, states: &[Option<HostState>]) -> Option<usize> {
        if self == Self::PreferStandby {
            if let Some(standby) = states.iter().position(|s| s.is_some_and(|s| s.in_recovery)) {
                return Some(standby);
            }
        }
        states
            .iter()
            .position(|s| s.is_some_and(|s| self.accepts(s)))
    }

    /// Whether the host in use, in `state`, is still the one [`SessionAttrs::choose`] could
    /// keep without looking at the others: it qualifies, and for `prefer-standby` it is a
    /// standby (a primary in use is kept only until a standby answers).
    pub fn settled_on(self, state: HostState) -> bool {
        match self {
            Self::PreferStandby => state.in_recovery,
            attrs => attrs.accepts(state),
        }
    }
}

/// A database URL's servers, each as the options of a connection to it, and what the
/// connection's server must be.
#[derive(Debug, Clone)]
pub struct Target {
    /// One entry per host, in the URL's order.
    pub hosts: Vec<PgConnectOptions>,
    /// `target_session_attrs` (default `any`).
    pub attrs: SessionAttrs,
}

impl Target {
    /// Reads a URL in libpq's form, one host or several separated by commas, each with an
    /// optional port (`h1:5432,[::1]:5433,h3`); `target_session_attrs` in its query. The other
    /// parameters apply to every host.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let Parts {
            scheme,
            userinfo,
            hosts,
            path,
            query,
        } = Parts::split(url)?;
        let mut attrs = SessionAttrs::Any;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.strip_prefix("target_session_attrs=") {
                Some(value) => attrs = value.parse()?,
                None => kept.push(pair),
            }
        }
        let query = if kept.is_empty() {
            String::new()
        } else {
            format!("?{}", kept.join("&"))
        };
        let userinfo = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
        let hosts = hosts
            .split(',')
            .enumerate()
            .map(|(i, host)| {
                if host.is_empty() && hosts.contains(',') {
                    bail!("host {} of the database URL is empty", i + 1);
                }
                PgConnectOptions::from_str(&format!("{scheme}://{userinfo}{host}{path}{query}"))
                    .with_context(|| format!("host {} of the database URL", i + 1))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self { hosts, attrs })
    }

    /// Whether connections need watching: several hosts, or one that must be of a kind.
    pub fn watched(&self) -> bool {
        self.hosts.len() > 1 || self.attrs != SessionAttrs::Any
    }

    /// The same target with `f` applied to each host's options.
    pub fn map(self, f: impl Fn(PgConnectOptions) -> PgConnectOptions) -> Self {
        Self {
            hosts: self.hosts.into_iter().map(f).collect(),
            attrs: self.attrs,
        }
    }
}

/// `host:port` of a connection's options, as the logs and `/readyz` name a server.
pub fn host_port(options: &PgConnectOptions) -> String {
    let host = options.get_host();
    // sqlx keeps an IPv6 address's brackets from the URL (and trims them when it connects).
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{}", options.get_port())
    } else {
        format!("{host}:{}", options.get_port())
    }
}

/// A database URL with its password, if any, replaced by `***` (for logs and `Debug`); also
/// for multi-host URLs, which the `url` crate cannot read.
pub fn without_password(url: &str) -> String {
    let Ok(parts) = Parts::split(url) else {
        return "(not a database URL)".to_owned();
    };
    let userinfo = match parts.userinfo {
        Some(u) => match u.split_once(':') {
            Some((user, _)) => format!("{user}:***@"),
            None => format!("{u}@"),
        },
        None => String::new(),
    };
    let query = if parts.query.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.query)
    };
    format!(
        "{}://{userinfo}{}{}{query}",
        parts.scheme, parts.hosts, parts.path
    )
}

/// A URL cut where libpq cuts it: `scheme://[userinfo@]hosts[/path][?query]`.
struct Parts<'a> {
    scheme: &'a str,
    userinfo: Option<&'a str>,
    hosts: &'a str,
    path: &'a str,
    query: &'a str,
}

impl<'a> Parts<'a> {
    fn split(url: &'a str) -> anyhow::Result<Self> {
        let (scheme, rest) = url
            .split_once("://")
            .filter(|(scheme, _)| matches!(*scheme, "postgres" | "postgresql"))
            .context("a database URL starts with postgres:// or postgresql://")?;
        // The authority ends at the path or the query; a password's `/`, `?` or `@` are
        // percent-encoded, so the last `@` before that end closes the user information.
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let (userinfo, hosts) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
        Ok(Self {
            scheme,
            userinfo,
            hosts,
            path,
            query,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(target: &Target) -> Vec<String> {
        target.hosts.iter().map(host_port).collect()
    }

    #[test]
    fn several_hosts_each_keep_the_login_database_and_parameters() {
        let target = Target::parse(
            "postgres://app:s%40cret@db1:5432,db2:5433,[::1]:6000,db4/crm?sslmode=disable&target_session_attrs=read-write&application_name=x",
        )
        .unwrap();
        assert_eq!(target.attrs, SessionAttrs::ReadWrite);
        assert_eq!(
            hosts(&target),
            ["db1:5432", "db2:5433", "[::1]:6000", "db4:5432"]
        );
        for host in &target.hosts {
            assert_eq!(host.get_username(), "app");
            assert_eq!(host.get_database(), Some("crm"));
            assert_eq!(host.get_application_name(), Some("x"));
        }
    }

    #[test]
    fn one_host_without_attributes_needs_no_watching() {
        let plain = Target::parse("postgres://postgres@127.0.0.1:5432/crm").unwrap();
        assert!(!plain.watched());
        assert_eq!(plain.attrs, SessionAttrs::Any);
        let one_of_a_kind =
            Target::parse("postgresql://postgres@127.0.0.1/crm?target_session_attrs=primary")
                .unwrap();
        assert!(one_of_a_kind.watched());
        assert!(Target::parse("postgres://a@h1,h2/db").unwrap().watched());
    }

    #[test]
    fn malformed_urls_are_refused_with_what_is_wrong() {
        let refused = |url: &str| format!("{:#}", Target::parse(url).unwrap_err());
        assert!(refused("mysql://h/db").contains("postgres://"));
        assert!(refused("postgres://u@h1,,h3/db").contains("host 2"));
        assert!(refused("postgres://u@h1:x,h2/db").contains("host 1"));
        assert!(
            refused("postgres://u@h1,h2/db?target_session_attrs=writable").contains("read-write")
        );
    }

    #[test]
    fn passwords_are_hidden_also_in_multi_host_urls() {
        assert_eq!(
            without_password(
                "postgres://app:hunter2@h1:5432,h2:5433/crm?target_session_attrs=read-write"
            ),
            "postgres://app:***@h1:5432,h2:5433/crm?target_session_attrs=read-write"
        );
        assert_eq!(
            without_password("postgres://app@h1/crm"),
            "postgres://app@h1/crm"
        );
        assert_eq!(without_password("h1:5432"), "(not a database URL)");
    }

    #[test]
    fn each_attribute_chooses_the_first_host_that_qualifies_in_order() {
        use HostState as S;
        let (p, s) = (Some(S::PRIMARY), Some(S::STANDBY));
        let read_only_primary = Some(S {
            in_recovery: false,
            read_only: true,
        });
        // (attributes, each host's state in order, the host chosen)
        type Case<'a> = (SessionAttrs, &'a [Option<S>], Option<usize>);
        let cases: &[Case] = &[
            (SessionAttrs::Any, &[None, s, p], Some(1)),
            (SessionAttrs::ReadWrite, &[s, None, p], Some(2)),
            (SessionAttrs::ReadWrite, &[s, read_only_primary], None),
            (SessionAttrs::ReadWrite, &[None, s], None),
            (SessionAttrs::Primary, &[read_only_primary, p], Some(0)),
            (SessionAttrs::ReadOnly, &[p, read_only_primary, s], Some(1)),
            (SessionAttrs::Standby, &[p, None, s], Some(2)),
            (SessionAttrs::Standby, &[p, None], None),
            (SessionAttrs::PreferStandby, &[p, s], Some(1)),
            (SessionAttrs::PreferStandby, &[None, p], Some(1)),
            (SessionAttrs::PreferStandby, &[None, None], None),
        ];
        for (attrs, states, chosen) in cases {
            assert_eq!(attrs.choose(states), *chosen, "{attrs} over {states:?}");
        }
    }

    #[test]
    fn a_primary_in_use_is_settled_for_writes_but_not_for_prefer_standby() {
        assert!(SessionAttrs::ReadWrite.settled_on(HostState::PRIMARY));
        assert!(!SessionAttrs::ReadWrite.settled_on(HostState::STANDBY));
        assert!(!SessionAttrs::PreferStandby.settled_on(HostState::PRIMARY));
        assert!(SessionAttrs::PreferStandby.settled_on(HostState::STANDBY));
        assert!(SessionAttrs::Any.settled_on(HostState::STANDBY));
    }
}
