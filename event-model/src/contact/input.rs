//! A command's input for a new contact or a profile update, as the caller gives it, not yet
//! checked.

use uuid::Uuid;

/// The language a contact is created with when the command names none (also the `contacts.language`
/// column's default).
pub const DEFAULT_LANGUAGE: &str = "en";

/// A contact to create, as the command gives it: nothing checked yet, [`crate::decide_contact`]
/// validates and normalises every field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewContact {
    /// The id chosen for the new contact (command-service makes a UUIDv7). The decider does not
    /// read it: the events go to [`crate::ContactScope::contact_id`], which the caller sets to the
    /// same id.
    pub contact_id: Uuid,
    /// The display name; required: trimmed, it must be 1 to 1,000 characters.
    pub name: String,
    /// An e-mail address, lower-cased and checked; `None`: the contact has none.
    pub email: Option<String>,
    /// A phone number, normalised to E.164 (`+` or `00`, then 8 to 15 digits; spaces, dots, dashes
    /// and parentheses dropped); `None`: the contact has none.
    pub phone: Option<String>,
    /// The contact's id in the project's own system, trimmed, 1 to 255 characters; `None`: none.
    pub external_id: Option<String>,
    /// The channel the contact first came through, trimmed, 1 to 255 characters; `None`: unknown.
    pub source_channel: Option<String>,
    /// A language tag such as `en` or `pt-BR`; `None`: [`DEFAULT_LANGUAGE`].
    pub language: Option<String>,
    /// The contact's timezone, free text, trimmed, 1 to 255 characters; `None`: unknown.
    pub timezone: Option<String>,
    /// The first tags: at most 200 in the list, each trimmed and 1 to 64 characters; duplicates
    /// collapse.
    pub tags: Vec<String>,
}

/// A partial profile update. The outer `Option` is "field present", the inner one "not null".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProfilePatch {
    /// A new display name; `Some(None)` is refused, a name cannot be cleared.
    pub name: Option<Option<String>>,
    /// A new e-mail address, or `Some(None)` to clear it.
    pub email: Option<Option<String>>,
    /// A new phone number, or `Some(None)` to clear it.
    pub phone: Option<Option<String>>,
    /// A new external id, or `Some(None)` to clear it.
    pub external_id: Option<Option<String>>,
    /// A new source channel, or `Some(None)` to clear it.
    pub source_channel: Option<Option<String>>,
    /// A new language tag; `Some(None)` is refused, a language cannot be cleared.
    pub language: Option<Option<String>>,
    /// A new timezone, or `Some(None)` to clear it.
    pub timezone: Option<Option<String>>,
    /// The whole new tag set, replacing the current one: each tag removed and each added is one
    /// event. `Some(None)` or an empty list clears every tag (one `contact.tags_cleared`).
    pub tags: Option<Option<Vec<String>>>,
}
