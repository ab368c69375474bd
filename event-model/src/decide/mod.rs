//! The deciders: each command, given the state it may read, becomes the events it causes or a
//! refusal. Pure functions of their inputs and [`crate::Context`].

mod contact;
mod profile;
mod session;

pub use contact::{decide_contact, ContactCommand, ContactScope};
pub use session::{decide_session, SessionCommand};
