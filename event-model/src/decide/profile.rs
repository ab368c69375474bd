//! The contact's profile: what a new contact and a profile change may hold, and the events they
//! cause.

use std::collections::BTreeSet;

use crate::contact::{ContactEvent, ContactView, NewContact, ProfilePatch, DEFAULT_LANGUAGE};
use crate::error::DomainError;
use crate::values::{self, Checks, MAX_TAGS, MAX_TEXT_LEN};

pub(super) fn profile_picture_url(raw: &str) -> Result<String, DomainError> {
    values::http_url("url", raw).map_err(|e| DomainError::Invalid(vec![e]))
}

fn optional_field(
    checks: &mut Checks,
    field: &str,
    value: Option<String>,
    parse: impl Fn(&str, &str) -> Result<String, crate::FieldError>,
) -> Option<String> {
    value.and_then(|v| checks.check(parse(field, &v)))
}

fn short_text(field: &str, raw: &str) -> Result<String, crate::FieldError> {
    values::required_text(field, raw, 255).map(|v| v.trim().to_owned())
}

pub(super) fn create(new: NewContact) -> Result<ContactEvent, DomainError> {
    let mut checks = Checks::default();
    let name = checks
        .check(values::required_text("name", &new.name, MAX_TEXT_LEN).map(|n| n.trim().to_owned()));
    let email = optional_field(&mut checks, "email", new.email, values::email);
    let phone = optional_field(&mut checks, "phone", new.phone, values::phone);
    let external_id = optional_field(&mut checks, "external_id", new.external_id, short_text);
    let source_channel = optional_field(
        &mut checks,
        "source_channel",
        new.source_channel,
        short_text,
    );
    let language = optional_field(&mut checks, "language", new.language, language_tag);
    let timezone = optional_field(&mut checks, "timezone", new.timezone, short_text);
    let tags = tag_set(&mut checks, "tags", new.tags).unwrap_or_default();
    checks.finish()?;
    Ok(ContactEvent::Created {
        name: Some(name.unwrap_or_default()),
        email,
        phone,
        external_id,
        source_channel,
        language: language.unwrap_or_else(|| DEFAULT_LANGUAGE.to_owned()),
        timezone,
        tags: tags.into_iter().collect(),
    })
}

fn language_tag(field: &str, raw: &str) -> Result<String, crate::FieldError> {
    let value = raw.trim();
    let ok = (2..=35).contains(&value.len())
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(value.to_owned())
    } else {
        Err(crate::FieldError::new(
            field,
            "must be a language tag such as en or pt-BR",
        ))
    }
}

/// Checks every tag of a list (each failing one is reported) and returns the set.
fn tag_set(checks: &mut Checks, field: &str, tags: Vec<String>) -> Option<BTreeSet<String>> {
    if tags.len() > MAX_TAGS {
        checks.push(crate::FieldError::new(
            field,
            format!("at most {MAX_TAGS} tags"),
        ));
        return None;
    }
    let mut set = BTreeSet::new();
    let mut ok = true;
    for (i, t) in tags.iter().enumerate() {
        match checks.check(values::tag(&format!("{field}[{i}]"), t)) {
            Some(tag) => {
                set.insert(tag);
            }
            None => ok = false,
        }
    }
    ok.then_some(set)
}

pub(super) fn update_profile(
    view: &ContactView,
    patch: ProfilePatch,
) -> Result<Vec<ContactEvent>, DomainError> {
    let mut changes = Changes::default();
    changes.name(view, patch.name);
    changes.optional(
        ("email", values::email),
        patch.email,
        &view.email,
        |email, previous| ContactEvent::EmailSet { email, previous },
    );
    changes.optional(
        ("phone", values::phone),
        patch.phone,
        &view.phone,
        |phone, previous| ContactEvent::PhoneSet { phone, previous },
    );
    changes.optional(
        ("external_id", short_text),
        patch.external_id,
        &view.external_id,
        |external_id, previous| ContactEvent::ExternalIdSet {
            external_id,
            previous,
        },
    );
    changes.optional(
        ("source_channel", short_text),
        patch.source_channel,
        &view.source_channel,
        |source_channel, previous| ContactEvent::SourceChannelSet {
            source_channel,
            previous,
        },
    );
    changes.optional(
        ("timezone", short_text),
        patch.timezone,
        &view.timezone,
        |timezone, previous| ContactEvent::TimezoneSet { timezone, previous },
    );
    changes.language(view, patch.language);
    changes.tags(view, patch.tags);
    changes.checks.finish()?;
    Ok(changes.events)
}

/// A field's name and the rule that parses it.
type Rule = (
    &'static str,
    fn(&str, &str) -> Result<String, crate::FieldError>,
);

/// A profile patch's events so far, and the checks of its fields: every invalid field is
/// reported, not only the first.
#[derive(Default)]
struct Changes {
    checks: Checks,
    events: Vec<ContactEvent>,
}

impl Changes {
    /// A name can be changed, not cleared.
    fn name(&mut self, view: &ContactView, value: Option<Option<String>>) {
        match value {
            Some(Some(name)) => {
                let checked = values::required_text("name", &name, MAX_TEXT_LEN);
                if let Some(name) = self.checks.check(checked) {
                    let name = name.trim().to_owned();
                    if Some(&name) != view.name.as_ref() {
                        self.events.push(ContactEvent::NameChanged {
                            name: Some(name),
                            previous: view.name.clone(),
                        });
                    }
                }
            }
            Some(None) => self
                .checks
                .push(crate::FieldError::new("name", "cannot be cleared")),
            None => {}
        }
    }

    /// A field that can be set or cleared (`Some(None)`); the same value decides nothing.
    fn optional(
        &mut self,
        (field, parse): Rule,
        value: Option<Option<String>>,
        current: &Option<String>,
        make: fn(Option<String>, Option<String>) -> ContactEvent,
    ) {
        let Some(value) = value else { return };
        let new = match value {
            Some(v) => match self.checks.check(parse(field, &v)) {
                Some(v) => Some(v),
                None => return,
            },
            None => None,
        };
        if &new != current {
            self.events.push(make(new, current.clone()));
        }
    }

    /// A language can be changed, not cleared.
    fn language(&mut self, view: &ContactView, value: Option<Option<String>>) {
        match value {
            Some(Some(language)) => {
                if let Some(language) = self.checks.check(language_tag("language", &language)) {
                    if language != view.language {
                        self.events.push(ContactEvent::LanguageChanged {
                            language,
                            previous: view.language.clone(),
                        });
                    }
                }
            }
            Some(None) => self
                .checks
                .push(crate::FieldError::new("language", "cannot be cleared")),
            None => {}
        }
    }

    /// The tags become exactly the set given: each removed and each added one an event, or one
    /// `contact.tags_cleared` for none.
    fn tags(&mut self, view: &ContactView, value: Option<Option<Vec<String>>>) {
        let Some(tags) = value else { return };
        let Some(wanted) = tag_set(&mut self.checks, "tags", tags.unwrap_or_default()) else {
            return;
        };
        if wanted.is_empty() {
            if !view.tags.is_empty() {
                self.events.push(ContactEvent::TagsCleared {
                    tags: view.tags.iter().cloned().collect(),
                });
            }
            return;
        }
        self.events.extend(
            view.tags
                .difference(&wanted)
                .map(|tag| ContactEvent::TagRemoved { tag: tag.clone() }),
        );
        self.events.extend(
            wanted
                .difference(&view.tags)
                .map(|tag| ContactEvent::TagAdded { tag: tag.clone() }),
        );
    }
}
