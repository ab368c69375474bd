//! Value rules shared by every command: how an e-mail, a phone number, a tag or a name must look.
//! Each parser normalises what it accepts, so the events only ever hold canonical values.

use chrono::{DateTime, SubsecRound, Utc};

use crate::error::FieldError;

/// The longest tag (a contact's, or a session's outcome tag), in characters (`char`s, not bytes).
pub const MAX_TAG_LEN: usize = 64;
/// The most tags a contact may hold and the most outcome tags a session may; also the longest list
/// one command may send (tags, outcome tags, topics, next steps).
pub const MAX_TAGS: usize = 200;
/// Distinct agents that may take part in one session: its `agent_ids` is a set kept in order of
/// first appearance, so it must stay small enough to scan.
pub const MAX_SESSION_AGENTS: usize = 64;
/// The longest short free text, in characters: a contact's name, a reason for deleting or
/// forgetting a contact or for assigning an agent, one summary topic or next step.
pub const MAX_TEXT_LEN: usize = 1_000;

/// How long an active session may go without traffic before it ends. A project sets it in minutes
/// (`projects.session_timeout_minutes`), `session.started` carries it in seconds, and the
/// sessions read model in nanoseconds (`timeout_duration`, as the inventory has it): this type is
/// the one place that converts between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionTimeout {
    seconds: i64,
}

impl SessionTimeout {
    /// A project's timeout when it sets none, and the timeout sweeper's for a session row that
    /// holds none.
    pub const DEFAULT: Self = Self::from_minutes(30);
    const NANOS_PER_SECOND: i64 = 1_000_000_000;
    /// The longest timeout, 100 years: nothing bounds `projects.session_timeout_minutes`, and a
    /// timeout added to a session's last activity must stay an instant chrono can hold.
    pub const MAX_SECONDS: i64 = 100 * 366 * 86_400;

    /// Any stored value is a timeout between none and [`Self::MAX_SECONDS`]: a value outside
    /// (a negative or absurd project setting) is read as the nearest bound.
    const fn bounded(seconds: i64) -> Self {
        let seconds = if seconds < 0 {
            0
        } else if seconds > Self::MAX_SECONDS {
            Self::MAX_SECONDS
        } else {
            seconds
        };
        Self { seconds }
    }

    /// A timeout of `minutes` minutes, as a project sets it.
    pub const fn from_minutes(minutes: i64) -> Self {
        Self::bounded(minutes.saturating_mul(60))
    }

    /// A timeout of `seconds` seconds, as `session.started` carries it.
    pub const fn from_seconds(seconds: i64) -> Self {
        Self::bounded(seconds)
    }

    /// A timeout of `nanos` nanoseconds, as the sessions read model holds it; a fraction of a
    /// second is dropped.
    pub const fn from_nanos(nanos: i64) -> Self {
        Self::bounded(nanos / Self::NANOS_PER_SECOND)
    }

    /// The timeout in whole seconds, as `session.started` carries it.
    pub const fn seconds(self) -> i64 {
        self.seconds
    }

    /// The timeout in nanoseconds, as the sessions read model holds it (100 years fit in an
    /// `i64` of nanoseconds).
    pub const fn nanos(self) -> i64 {
        self.seconds * Self::NANOS_PER_SECOND
    }

    /// The timeout as a span of time, to add to a session's last activity.
    pub fn duration(self) -> chrono::Duration {
        chrono::Duration::seconds(self.seconds)
    }
}

/// The longest long free text, in characters: a session's summary.
pub const MAX_LONG_TEXT_LEN: usize = 20_000;

/// Lower-cases and checks an e-mail address (one `@`, a non-empty local part, a dotted domain,
/// no whitespace). Deliberately not RFC 5322 in full: what a CRM can actually send mail to.
pub fn email(field: &str, raw: &str) -> Result<String, FieldError> {
    let value = raw.trim().to_lowercase();
    let bad = || FieldError::new(field, "must be a valid e-mail address");
    if value.len() > 254 || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let (local, domain) = value.split_once('@').ok_or_else(bad)?;
    let labels_ok = domain.split('.').count() >= 2
        && domain.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
    if local.is_empty() || local.len() > 64 || domain.contains('@') || !labels_ok {
        return Err(bad());
    }
    Ok(value)
}

/// Normalises a phone number to E.164: `+` then 8 to 15 digits. Spaces, dots, dashes and
/// parentheses are separators and dropped; a leading `00` is read as `+`.
pub fn phone(field: &str, raw: &str) -> Result<String, FieldError> {
    let bad = || {
        FieldError::new(
            field,
            "must be a phone number in E.164 form: + and 8 to 15 digits",
        )
    };
    let trimmed = raw.trim();
    let rest = if let Some(rest) = trimmed.strip_prefix('+') {
        rest
    } else if let Some(rest) = trimmed.strip_prefix("00") {
        rest
    } else {
        return Err(bad());
    };
    let mut digits = String::with_capacity(rest.len());
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return Err(bad()),
        }
    }
    if !(8..=15).contains(&digits.len()) || digits.starts_with('0') {
        return Err(bad());
    }
    Ok(format!("+{digits}"))
}

/// A tag: trimmed, 1 to 64 characters, no control characters.
pub fn tag(field: &str, raw: &str) -> Result<String, FieldError> {
    let value = raw.trim();
    if value.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if value.chars().count() > MAX_TAG_LEN {
        return Err(FieldError::new(
            field,
            format!("must be at most {MAX_TAG_LEN} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(value.to_owned())
}

/// Free text that must be present: trimmed, non-empty, bounded.
pub fn required_text(field: &str, raw: &str, max: usize) -> Result<String, FieldError> {
    let value = raw.trim();
    if value.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    optional_text(field, value, max)
}

/// Free text that may be empty: bounded, no NUL (PostgreSQL text cannot hold it).
pub fn optional_text(field: &str, raw: &str, max: usize) -> Result<String, FieldError> {
    if raw.chars().count() > max {
        return Err(FieldError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if raw.contains('\0') {
        return Err(FieldError::new(field, "must not contain NUL characters"));
    }
    Ok(raw.to_owned())
}

/// An http(s) URL: trimmed, at most 2,048 characters, no whitespace or control characters.
pub fn http_url(field: &str, raw: &str) -> Result<String, FieldError> {
    let url = raw.trim();
    let ok = (url.starts_with("https://") || url.starts_with("http://"))
        && url.len() <= 2_048
        && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(url.to_owned())
    } else {
        Err(FieldError::new(
            field,
            "must be an http(s) URL of at most 2048 characters",
        ))
    }
}

/// A MIME type, `type/subtype` (RFC 6838 names, an optional `;` parameter list after them), at
/// most 255 characters, lower-cased.
pub fn mime_type(field: &str, raw: &str) -> Result<String, FieldError> {
    let value = raw.trim().to_ascii_lowercase();
    let name = |part: &str| {
        !part.is_empty()
            && part.len() <= 127
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let ok = value.len() <= 255
        && value.bytes().all(|b| (b' '..=b'~').contains(&b))
        && essence
            .split_once('/')
            .is_some_and(|(kind, sub)| name(kind) && name(sub));
    if ok {
        Ok(value)
    } else {
        Err(FieldError::new(
            field,
            "must be a MIME type such as image/jpeg (at most 255 characters)",
        ))
    }
}

/// An id another system gave: 1 to `max` visible ASCII characters or letters of any script, no
/// whitespace or control characters; kept as given.
pub fn external_id(field: &str, raw: &str, max: usize) -> Result<String, FieldError> {
    let ok = !raw.is_empty()
        && raw.chars().count() <= max
        && !raw.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(FieldError::new(
            field,
            format!("must be 1 to {max} characters without spaces or control characters"),
        ))
    }
}

/// How an agent came to a session: `manual` (the default), `automatic`, or `reassignment_<why>`
/// where `<why>` is 1 to 51 ASCII letters, digits, `_` or `-` (the whole at most 64 bytes).
pub fn assignment_source(raw: Option<String>) -> Result<String, FieldError> {
    let Some(source) = raw else {
        return Ok("manual".to_owned());
    };
    let why_ok = |why: &str| {
        !why.is_empty()
            && why.len() <= 51
            && why
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    let ok = source == "manual"
        || source == "automatic"
        || source.strip_prefix("reassignment_").is_some_and(why_ok);
    if ok {
        Ok(source)
    } else {
        Err(FieldError::new(
            "source",
            "must be manual, automatic or reassignment_<why> (letters, digits, _ or -)",
        ))
    }
}

/// Times are kept to the microsecond, the precision PostgreSQL stores, so that an event read back
/// from the store equals the event that was decided.
pub fn instant(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

/// Collects the field errors of several checks into one `Invalid` refusal.
#[derive(Debug, Default)]
pub struct Checks(Vec<FieldError>);

impl Checks {
    /// Records the error of `result`, if any, and gives back its value otherwise, so that a command
    /// goes on checking its other fields.
    pub fn check<T>(&mut self, result: Result<T, FieldError>) -> Option<T> {
        result.map_err(|e| self.0.push(e)).ok()
    }

    /// Records an error found by a check that is not a parser (a length, a combination of fields).
    pub fn push(&mut self, error: FieldError) {
        self.0.push(error);
    }

    /// `Ok` when no check failed, otherwise one
    /// [`DomainError::Invalid`](crate::DomainError::Invalid) with every error in the order found.
    pub fn finish(self) -> Result<(), crate::DomainError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(crate::DomainError::Invalid(self.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_lower_cased_and_checked() {
        assert_eq!(email("e", " Ana@Example.COM ").unwrap(), "ana@example.com");
        for bad in [
            "",
            "ana",
            "ana@",
            "@x.io",
            "ana@x",
            "a b@x.io",
            "ana@x..io",
            "a@b@c.io",
            "ana@-x.io",
        ] {
            assert!(email("e", bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn phones_are_normalised_to_e164() {
        assert_eq!(phone("p", "+55 (11) 98765-4321").unwrap(), "+5511987654321");
        assert_eq!(phone("p", "0044 20 7946 0958").unwrap(), "+442079460958");
        for bad in [
            "",
            "12345678",
            "+1234567",
            "+1234567890123456",
            "+12a4567890",
            "+0123456789",
        ] {
            assert!(phone("p", bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn tags_are_trimmed_and_bounded() {
        assert_eq!(tag("t", "  vip ").unwrap(), "vip");
        assert!(tag("t", "   ").is_err());
        assert!(tag("t", &"x".repeat(65)).is_err());
        assert_eq!(tag("t", &"é".repeat(64)).unwrap().chars().count(), 64);
    }

    #[test]
    fn an_assignment_source_is_one_of_three_shapes() {
        assert_eq!(assignment_source(None).unwrap(), "manual");
        for good in [
            "manual",
            "automatic",
            "reassignment_timeout",
            "reassignment_shift-end",
        ] {
            assert_eq!(assignment_source(Some(good.into())).unwrap(), good);
        }
        let long_why = format!("reassignment_{}", "x".repeat(52));
        for bad in [
            "",
            "Manual",
            "reassignment_",
            "reassignment_a\0b",
            "reassignment_a b",
            "reassignment_\u{7}",
            long_why.as_str(),
        ] {
            let refused = assignment_source(Some(bad.into())).unwrap_err();
            assert_eq!(refused.field, "source", "{bad:?}");
        }
    }

    #[test]
    fn a_session_timeout_is_bounded_so_that_adding_it_cannot_overflow() {
        let at = chrono::DateTime::<chrono::Utc>::MAX_UTC - chrono::Duration::days(365 * 200);
        for absurd in [i64::MAX, i64::MAX / 60, i64::MIN] {
            let timeout = SessionTimeout::from_minutes(absurd);
            assert!(timeout.seconds() <= SessionTimeout::MAX_SECONDS && timeout.seconds() >= 0);
            assert!(at.checked_add_signed(timeout.duration()).is_some());
            assert_eq!(SessionTimeout::from_nanos(timeout.nanos()), timeout);
        }
        assert_eq!(SessionTimeout::from_minutes(-5).seconds(), 0);
        assert_eq!(SessionTimeout::from_seconds(90).seconds(), 90);
    }
}
