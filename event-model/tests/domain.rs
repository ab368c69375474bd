//! Given/when/then tests of the Contact and Session rules, and property tests that random command
//! sequences never break an invariant.

mod support;

use event_model::contact::{NewContact, ProfilePatch};
use event_model::session::{ContentType, MessageContent, NewMessage, NewSummary, Outcome};
use event_model::{
    AggregateType, ContactCommand, ContactEvent, DomainError, DomainEvent, EndReason, Sentiment,
    SessionCommand, SessionEvent, SessionStatus, Snapshot,
};
use support::{ctx_at, t, types, World};
use uuid::Uuid;

fn created() -> World {
    let mut world = World::new();
    world
        .run_contact(
            ContactCommand::Create(NewContact {
                name: "Ana Souza".into(),
                email: Some("Ana@Example.com".into()),
                phone: Some("+55 11 98765-4321".into()),
                tags: vec!["lead".into()],
                ..NewContact::default()
            }),
            &ctx_at(0),
        )
        .unwrap();
    world
}

fn message(from_contact: bool, agent: Option<Uuid>, at: i64) -> NewMessage {
    NewMessage {
        message_id: Some(Uuid::now_v7()),
        from_contact,
        agent_id: agent,
        sent_at: t(at),
        content: Default::default(),
    }
}

fn inbound(world: &mut World, channel: i64, at: i64) -> Uuid {
    let events = world
        .run_contact(
            ContactCommand::RecordMessage {
                channel_type_id: channel,
                pipeline_id: None,
                message: message(true, None, at),
                new_session_id: Uuid::now_v7(),
            },
            &ctx_at(at),
        )
        .unwrap();
    events.last().unwrap().aggregate_id
}

#[test]
fn creating_normalises_and_defaults() {
    let world = created();
    let view = &world.contact.view;
    assert_eq!(view.email.as_deref(), Some("ana@example.com"));
    assert_eq!(view.phone.as_deref(), Some("+5511987654321"));
    assert_eq!(view.language, "en");
    assert_eq!(world.contact.version, 1);
}

#[test]
fn creating_collects_every_field_error() {
    let err = World::new()
        .when_contact(
            ContactCommand::Create(NewContact {
                name: " ".into(),
                email: Some("nope".into()),
                phone: Some("123".into()),
                tags: vec!["".into(), "x".repeat(65)],
                ..NewContact::default()
            }),
            &ctx_at(0),
        )
        .unwrap_err();
    let DomainError::Invalid(fields) = err else {
        panic!("expected Invalid, got {err:?}")
    };
    let names: Vec<_> = fields.iter().map(|f| f.field.as_str()).collect();
    assert_eq!(names, ["name", "email", "phone", "tags[0]", "tags[1]"]);
}

#[test]
fn an_update_emits_one_event_per_changed_field_and_nothing_for_a_no_op() {
    let world = created();
    let events = world
        .when_contact(
            ContactCommand::UpdateProfile(ProfilePatch {
                name: Some(Some("Ana Souza".into())),
                email: Some(Some("ana@example.com".into())),
                phone: Some(None),
                timezone: Some(Some("America/Sao_Paulo".into())),
                ..ProfilePatch::default()
            }),
            &ctx_at(1),
        )
        .unwrap();
    assert_eq!(
        types(&events),
        ["contact.phone_set", "contact.timezone_set"]
    );
    assert!(world
        .when_contact(
            ContactCommand::UpdateProfile(ProfilePatch::default()),
            &ctx_at(1)
        )
        .unwrap()
        .is_empty());
    assert_eq!(
        world.when_contact(
            ContactCommand::UpdateProfile(ProfilePatch {
                name: Some(None),
                ..Default::default()
            }),
            &ctx_at(1)
        ),
        Err(DomainError::invalid("name", "cannot be cleared"))
    );
}

#[test]
fn tags_are_a_set() {
    let mut world = created();
    assert!(world
        .when_contact(ContactCommand::AddTag { tag: "lead".into() }, &ctx_at(1))
        .unwrap()
        .is_empty());
    assert_eq!(
        types(
            &world
                .run_contact(
                    ContactCommand::AddTag {
                        tag: " vip ".into()
                    },
                    &ctx_at(1)
                )
                .unwrap()
        ),
        ["contact.tag_added"]
    );
    assert!(world.contact.view.tags.contains("vip"));
    assert!(world
        .when_contact(
            ContactCommand::RemoveTag {
                tag: "absent".into()
            },
            &ctx_at(1)
        )
        .unwrap()
        .is_empty());
    let cleared = world
        .run_contact(
            ContactCommand::UpdateProfile(ProfilePatch {
                tags: Some(None),
                ..Default::default()
            }),
            &ctx_at(2),
        )
        .unwrap();
    assert_eq!(types(&cleared), ["contact.tags_cleared"]);
    assert!(world.contact.view.tags.is_empty());
}

#[test]
fn a_message_opens_a_session_then_goes_to_it() {
    let mut world = created();
    let first = world
        .run_contact(
            ContactCommand::RecordMessage {
                channel_type_id: 1,
                pipeline_id: None,
                message: message(true, None, 10),
                new_session_id: Uuid::now_v7(),
            },
            &ctx_at(10),
        )
        .unwrap();
    assert_eq!(
        types(&first),
        [
            "session.started",
            "contact.session_opened",
            "session.message_recorded"
        ]
    );
    let session_id = first[0].aggregate_id;
    let second = world
        .run_contact(
            ContactCommand::RecordMessage {
                channel_type_id: 1,
                pipeline_id: None,
                message: message(false, Some(Uuid::now_v7()), 70),
                new_session_id: Uuid::now_v7(),
            },
            &ctx_at(70),
        )
        .unwrap();
    assert_eq!(types(&second), ["session.message_recorded"]);
    assert_eq!(second[0].aggregate_id, session_id);
    let view = &world.sessions[&session_id].view;
    assert_eq!(
        (
            view.message_count,
            view.messages_from_contact,
            view.messages_from_agent
        ),
        (2, 1, 1)
    );
    assert_eq!(view.agent_response_time_seconds, Some(60));
    assert_eq!(view.contact_wait_time_seconds, None);
    assert_eq!(view.last_activity_at, Some(t(70)));
}

#[test]
fn a_second_session_on_the_same_channel_is_refused() {
    let mut world = created();
    let session_id = inbound(&mut world, 1, 10);
    let err = world
        .when_contact(
            ContactCommand::StartSession {
                session_id: Uuid::now_v7(),
                channel_type_id: 1,
                pipeline_id: None,
            },
            &ctx_at(20),
        )
        .unwrap_err();
    assert_eq!(
        err,
        DomainError::SessionAlreadyActive {
            session_id,
            channel_type_id: 1
        }
    );
    // Another channel is free.
    assert!(world
        .when_contact(
            ContactCommand::StartSession {
                session_id: Uuid::now_v7(),
                channel_type_id: 2,
                pipeline_id: None
            },
            &ctx_at(20),
        )
        .is_ok());
}

#[test]
fn a_message_after_the_timeout_ends_the_idle_session_and_starts_another() {
    let mut world = created();
    let old = inbound(&mut world, 1, 10);
    let events = world
        .run_contact(
            ContactCommand::RecordMessage {
                channel_type_id: 1,
                pipeline_id: None,
                message: message(true, None, 10 + 1_801),
                new_session_id: Uuid::now_v7(),
            },
            &ctx_at(10 + 1_801),
        )
        .unwrap();
    assert_eq!(
        types(&events),
        [
            "session.ended",
            "contact.session_closed",
            "session.started",
            "contact.session_opened",
            "session.message_recorded"
        ]
    );
    let old_view = &world.sessions[&old].view;
    assert_eq!(old_view.end_reason, Some(EndReason::InactivityTimeout));
    assert_eq!(old_view.ended_at, Some(t(10 + 1_800)));
    assert_eq!(old_view.duration_seconds, 1_800);
    assert_ne!(events[2].aggregate_id, old);
}

#[test]
fn agents_transfers_and_participants() {
    let mut world = created();
    let session = inbound(&mut world, 1, 0);
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let assign = |agent| SessionCommand::AssignAgent {
        agent_id: agent,
        source: None,
        strategy: None,
        reason: None,
    };
    world.run_session(session, assign(a), &ctx_at(1)).unwrap();
    assert!(
        world
            .when_session(session, assign(a), &ctx_at(2))
            .unwrap()
            .is_empty(),
        "same agent is a no-op"
    );
    let transfer = world.run_session(session, assign(b), &ctx_at(3)).unwrap();
    assert!(matches!(
        &transfer[0].event,
        DomainEvent::Session(SessionEvent::AgentAssigned { previous_agent_id: Some(p), .. }) if *p == a
    ));
    world.run_session(session, assign(a), &ctx_at(4)).unwrap();
    let view = &world.sessions[&session].view;
    assert_eq!(view.agent_ids, vec![a, b]);
    assert_eq!(view.agent_transfers, 2);
}

#[test]
fn the_agent_speaking_first_measures_the_contact_wait() {
    let mut world = created();
    let session_id = Uuid::now_v7();
    world
        .run_contact(
            ContactCommand::StartSession {
                session_id,
                channel_type_id: 3,
                pipeline_id: None,
            },
            &ctx_at(0),
        )
        .unwrap();
    world
        .run_session(
            session_id,
            SessionCommand::RecordMessage(message(false, None, 5)),
            &ctx_at(5),
        )
        .unwrap();
    world
        .run_session(
            session_id,
            SessionCommand::RecordMessage(message(true, None, 95)),
            &ctx_at(95),
        )
        .unwrap();
    let view = &world.sessions[&session_id].view;
    assert_eq!(view.contact_wait_time_seconds, Some(90));
    assert_eq!(view.agent_response_time_seconds, None);
}

#[test]
fn ending_rules() {
    let mut world = created();
    let session = inbound(&mut world, 1, 0);
    assert_eq!(
        world.when_session(
            session,
            SessionCommand::SetOutcome(Outcome {
                resolved: Some(true),
                ..Default::default()
            }),
            &ctx_at(1)
        ),
        Err(DomainError::ResolveActiveSession)
    );
    assert_eq!(
        world.when_session(session, SessionCommand::EndIfIdle, &ctx_at(60)),
        Err(DomainError::SessionNotTimedOut)
    );
    let ended = world
        .run_session(
            session,
            SessionCommand::End {
                reason: EndReason::AgentClose,
            },
            &ctx_at(600),
        )
        .unwrap();
    assert_eq!(types(&ended), ["session.ended", "contact.session_closed"]);
    assert!(world.contact.active_sessions.is_empty());
    let view = &world.sessions[&session].view;
    assert_eq!(
        (view.status, view.duration_seconds),
        (SessionStatus::Ended, 600)
    );
    assert_eq!(
        world.when_session(
            session,
            SessionCommand::End {
                reason: EndReason::AgentClose
            },
            &ctx_at(601)
        ),
        Err(DomainError::SessionEnded)
    );
    assert_eq!(
        world.when_session(
            session,
            SessionCommand::RecordMessage(message(true, None, 602)),
            &ctx_at(602)
        ),
        Err(DomainError::SessionEnded)
    );
    let outcome = world
        .run_session(
            session,
            SessionCommand::SetOutcome(Outcome {
                resolved: Some(true),
                converted: Some(true),
                outcome_tags: Some(vec!["sale".into(), "sale".into()]),
                ..Default::default()
            }),
            &ctx_at(700),
        )
        .unwrap();
    assert_eq!(
        types(&outcome),
        [
            "session.resolved",
            "session.converted",
            "session.outcome_tagged"
        ]
    );
    assert_eq!(
        world.sessions[&session].view.outcome_tags,
        vec!["sale".to_owned()]
    );
}

#[test]
fn the_sweeper_ends_only_an_idle_session_at_its_timeout() {
    let mut world = created();
    let session = inbound(&mut world, 1, 0);
    let ended = world
        .run_session(session, SessionCommand::EndIfIdle, &ctx_at(5_000))
        .unwrap();
    assert_eq!(types(&ended), ["session.ended", "contact.session_closed"]);
    let view = &world.sessions[&session].view;
    assert_eq!(view.end_reason, Some(EndReason::InactivityTimeout));
    assert_eq!(view.ended_at, Some(t(1_800)));
}

#[test]
fn deleting_closes_open_sessions_and_then_refuses_everything() {
    let mut world = created();
    let s1 = inbound(&mut world, 1, 0);
    let s2 = inbound(&mut world, 2, 0);
    let events = world
        .run_contact(
            ContactCommand::Delete {
                reason: Some("gdpr".into()),
            },
            &ctx_at(50),
        )
        .unwrap();
    assert_eq!(
        types(&events),
        [
            "session.ended",
            "contact.session_closed",
            "session.ended",
            "contact.session_closed",
            "contact.deleted"
        ]
    );
    for s in [s1, s2] {
        assert_eq!(
            world.sessions[&s].view.end_reason,
            Some(EndReason::SystemClose)
        );
    }
    assert_eq!(
        world.when_contact(ContactCommand::AddTag { tag: "x".into() }, &ctx_at(51)),
        Err(DomainError::ContactDeleted)
    );
    assert_eq!(
        world.when_session(
            s1,
            SessionCommand::SetOutcome(Outcome {
                converted: Some(true),
                ..Default::default()
            }),
            &ctx_at(51)
        ),
        Err(DomainError::ContactDeleted)
    );
}

#[test]
fn forgetting_ends_sessions_deletes_nulls_the_personal_fields_and_is_idempotent() {
    let mut world = created();
    let s1 = inbound(&mut world, 1, 0);
    let events = world
        .run_contact(
            ContactCommand::Forget {
                reason: Some("erasure request 118".into()),
            },
            &ctx_at(60),
        )
        .unwrap();
    assert_eq!(
        types(&events),
        [
            "session.ended",
            "contact.session_closed",
            "contact.deleted",
            "contact.forgotten"
        ]
    );
    assert_eq!(
        world.sessions[&s1].view.end_reason,
        Some(EndReason::SystemClose)
    );
    let view = &world.contact.view;
    assert_eq!(
        (&view.name, &view.email, &view.phone),
        (&None, &None, &None)
    );
    assert_eq!(view.forgotten_at, Some(t(60)));
    assert_eq!(view.deleted_at, Some(t(60)));
    assert_eq!(
        view.tags.iter().collect::<Vec<_>>(),
        ["lead"],
        "tags are not personal"
    );
    // Again: nothing new; other commands are refused as on any deleted contact.
    assert_eq!(
        world.when_contact(ContactCommand::Forget { reason: None }, &ctx_at(61)),
        Ok(vec![])
    );
    assert_eq!(
        world.when_contact(ContactCommand::AddTag { tag: "x".into() }, &ctx_at(61)),
        Err(DomainError::ContactDeleted)
    );
}

#[test]
fn forgetting_a_deleted_contact_adds_only_the_erasure() {
    let mut world = created();
    world
        .run_contact(ContactCommand::Delete { reason: None }, &ctx_at(10))
        .unwrap();
    let events = world
        .run_contact(ContactCommand::Forget { reason: None }, &ctx_at(20))
        .unwrap();
    assert_eq!(types(&events), ["contact.forgotten"]);
    assert_eq!(world.contact.view.deleted_at, Some(t(10)));
    assert_eq!(
        World::new().when_contact(ContactCommand::Forget { reason: None }, &ctx_at(0)),
        Err(DomainError::ContactNotFound)
    );
}

#[test]
fn a_session_holds_a_bounded_set_of_agents_and_outcome_tags() {
    let mut world = created();
    let session = inbound(&mut world, 1, 0);
    let agents: Vec<Uuid> = (0..event_model::values::MAX_SESSION_AGENTS)
        .map(|_| Uuid::now_v7())
        .collect();
    for (i, agent) in agents.iter().enumerate() {
        world
            .run_session(
                session,
                SessionCommand::RecordMessage(message(false, Some(*agent), i as i64 + 1)),
                &ctx_at(i as i64 + 1),
            )
            .unwrap();
    }
    let one_more = Uuid::now_v7();
    for command in [
        SessionCommand::RecordMessage(message(false, Some(one_more), 100)),
        SessionCommand::AssignAgent {
            agent_id: one_more,
            source: None,
            strategy: None,
            reason: None,
        },
    ] {
        assert!(
            matches!(
                world.when_session(session, command, &ctx_at(100)),
                Err(DomainError::Invalid(_))
            ),
            "a 65th agent is refused"
        );
    }
    assert!(
        matches!(
            world.when_contact(
                ContactCommand::RecordMessage {
                    channel_type_id: 1,
                    pipeline_id: None,
                    message: message(false, Some(one_more), 100),
                    new_session_id: Uuid::now_v7(),
                },
                &ctx_at(100),
            ),
            Err(DomainError::Invalid(_))
        ),
        "a 65th agent is refused on the contact's path too"
    );
    // One already taking part may still speak and be assigned.
    world
        .run_session(
            session,
            SessionCommand::RecordMessage(message(false, Some(agents[0]), 101)),
            &ctx_at(101),
        )
        .unwrap();
    assert_eq!(world.sessions[&session].view.agent_ids, agents);

    let tags = |range: std::ops::Range<usize>| Outcome {
        outcome_tags: Some(range.map(|i| format!("tag-{i}")).collect()),
        ..Outcome::default()
    };
    world
        .run_session(
            session,
            SessionCommand::SetOutcome(tags(0..150)),
            &ctx_at(102),
        )
        .unwrap();
    assert!(matches!(
        world.when_session(
            session,
            SessionCommand::SetOutcome(tags(150..260)),
            &ctx_at(103)
        ),
        Err(DomainError::Invalid(_))
    ));
    // Tags already there do not count twice.
    world
        .run_session(
            session,
            SessionCommand::SetOutcome(tags(100..200)),
            &ctx_at(104),
        )
        .unwrap();
    assert_eq!(
        world.sessions[&session].view.outcome_tags.len(),
        event_model::values::MAX_TAGS
    );
}

fn with_content(content: MessageContent) -> NewMessage {
    NewMessage {
        content,
        ..message(true, None, 1)
    }
}

#[test]
fn a_message_carries_its_content_checked_and_only_real_content_is_personal() {
    let mut world = created();
    let session = inbound(&mut world, 7, 0);
    let reply_to = Uuid::now_v7();
    let photo = MessageContent {
        content_type: Some(ContentType::Image),
        text: Some("  the receipt \n".into()),
        media_url: Some(" https://cdn.example.com/r.jpg ".into()),
        media_mimetype: Some("Image/JPEG".into()),
        channel_message_id: Some("wamid.HBgLNTUxMTk5OTk5OTk5FQIAEhg".into()),
        reply_to: Some(reply_to),
    };
    let events = world
        .run_session(
            session,
            SessionCommand::RecordMessage(with_content(photo)),
            &ctx_at(1),
        )
        .unwrap();
    let DomainEvent::Session(SessionEvent::MessageRecorded {
        channel_type_id,
        content_type,
        text,
        media_url,
        media_mimetype,
        channel_message_id,
        reply_to: answered,
        ..
    }) = &events[0].event
    else {
        panic!("not a message: {events:?}");
    };
    assert_eq!(*channel_type_id, Some(7), "the session's channel");
    assert_eq!(*content_type, ContentType::Image);
    assert_eq!(
        text.as_deref(),
        Some("  the receipt \n"),
        "text kept as given"
    );
    assert_eq!(media_url.as_deref(), Some("https://cdn.example.com/r.jpg"));
    assert_eq!(media_mimetype.as_deref(), Some("image/jpeg"));
    assert_eq!(
        channel_message_id.as_deref(),
        Some("wamid.HBgLNTUxMTk5OTk5OTk5FQIAEhg")
    );
    assert_eq!(*answered, Some(reply_to));
    match events[0].event.payload().personal {
        event_model::Personal::Plain(fields) => {
            assert_eq!(fields.len(), 3, "text, media_url, channel_message_id");
            assert_eq!(fields["text"], "  the receipt \n");
        }
        other => panic!("content is personal: {other:?}"),
    }
    // A message recorded for its metrics alone has nothing to seal.
    let bare = world
        .run_session(
            session,
            SessionCommand::RecordMessage(message(true, None, 2)),
            &ctx_at(2),
        )
        .unwrap();
    assert_eq!(
        bare[0].event.payload().personal,
        event_model::Personal::None
    );
    let counted = &world.sessions[&session].view;
    assert_eq!(counted.message_count, 3, "content changes no metric");

    let refused = |content: MessageContent| match world.when_session(
        session,
        SessionCommand::RecordMessage(with_content(content)),
        &ctx_at(3),
    ) {
        Err(DomainError::Invalid(errors)) => {
            errors.into_iter().map(|e| e.field).collect::<Vec<String>>()
        }
        other => panic!("not refused: {other:?}"),
    };
    assert_eq!(
        refused(MessageContent {
            text: Some("x".repeat(4_097)),
            ..MessageContent::default()
        }),
        ["text"]
    );
    assert_eq!(
        refused(MessageContent {
            text: Some(String::new()),
            ..MessageContent::default()
        }),
        ["text"]
    );
    assert_eq!(
        refused(MessageContent {
            content_type: Some(ContentType::Audio),
            ..MessageContent::default()
        }),
        ["media_url"],
        "media needs its URL"
    );
    assert_eq!(
        refused(MessageContent {
            media_url: Some("ftp://example.com/a".into()),
            media_mimetype: Some("jpeg".into()),
            channel_message_id: Some("has space".into()),
            ..MessageContent::default()
        }),
        ["media_url", "media_mimetype", "channel_message_id"]
    );
    assert_eq!(
        refused(MessageContent {
            media_mimetype: Some("image/png".into()),
            ..MessageContent::default()
        }),
        ["media_mimetype"],
        "a MIME type without media"
    );
    assert!(world
        .when_session(
            session,
            SessionCommand::RecordMessage(with_content(MessageContent {
                text: Some("ü".repeat(4_096)),
                ..MessageContent::default()
            })),
            &ctx_at(3),
        )
        .is_ok());
}

#[test]
fn summaries_are_validated_and_a_repeat_is_a_no_op() {
    let mut world = created();
    let session = inbound(&mut world, 1, 0);
    let summary = |score| NewSummary {
        summary: "Asked for a refund".into(),
        sentiment: Some(Sentiment::Negative),
        sentiment_score: Some(score),
        topics: vec!["refund".into()],
        next_steps: vec!["call back".into()],
        key_entities: Some(serde_json::json!({"order": "A-1"})),
    };
    assert_eq!(
        world.when_session(session, SessionCommand::Summarize(summary(1.5)), &ctx_at(1)),
        Err(DomainError::invalid(
            "sentiment_score",
            "must be between -1 and 1"
        ))
    );
    assert_eq!(
        types(
            &world
                .run_session(
                    session,
                    SessionCommand::Summarize(summary(-0.5)),
                    &ctx_at(1)
                )
                .unwrap()
        ),
        ["session.summarized"]
    );
    assert!(world
        .when_session(
            session,
            SessionCommand::Summarize(summary(-0.5)),
            &ctx_at(2)
        )
        .unwrap()
        .is_empty());
}

#[test]
fn every_event_round_trips_through_its_stored_form() {
    let mut world = created();
    let session = inbound(&mut world, 1, 0);
    world
        .run_session(
            session,
            SessionCommand::AssignAgent {
                agent_id: Uuid::now_v7(),
                source: Some("automatic".into()),
                strategy: Some("round_robin".into()),
                reason: None,
            },
            &ctx_at(1),
        )
        .unwrap();
    world
        .run_session(
            session,
            SessionCommand::RecordMessage(with_content(MessageContent {
                content_type: Some(ContentType::Document),
                text: Some("the contract".into()),
                media_url: Some("https://cdn.example.com/c.pdf".into()),
                media_mimetype: Some("application/pdf".into()),
                channel_message_id: Some("m-1".into()),
                reply_to: Some(Uuid::now_v7()),
            })),
            &ctx_at(2),
        )
        .unwrap();
    world
        .run_contact(
            ContactCommand::SetProfilePicture {
                url: "https://cdn.example.com/a.png".into(),
                fetched_at: t(3),
            },
            &ctx_at(3),
        )
        .unwrap();
    world
        .run_contact(ContactCommand::Delete { reason: None }, &ctx_at(4))
        .unwrap();
    world
        .run_contact(
            ContactCommand::Forget {
                reason: Some("erasure request 118".into()),
            },
            &ctx_at(5),
        )
        .unwrap();
    for pending in &world.history {
        let e = &pending.event;
        // As the previous release stored it: every field in the clear.
        let back = DomainEvent::decode(
            e.aggregate_type(),
            e.event_type(),
            event_model::event::PLAIN_EVENT_VERSION,
            e.data(),
        )
        .unwrap();
        assert_eq!(&back, e);
        // As it is stored now: the personal fields apart, to be sealed.
        let payload = e.payload();
        assert_eq!(
            DomainEvent::from_payload(e.aggregate_type(), &payload).unwrap(),
            *e
        );
        let names = event_model::personal::fields(e.event_type());
        for name in names {
            assert!(
                !payload.public.contains_key(*name),
                "{name} of {} is personal",
                e.event_type()
            );
        }
        assert!(
            e.data().get("type").is_none(),
            "the payload holds only the event's data"
        );
    }
    assert!(DomainEvent::decode(
        AggregateType::Contact,
        "contact.created",
        "v9",
        serde_json::json!({})
    )
    .is_err());
    assert!(DomainEvent::decode(
        AggregateType::Session,
        "contact.created",
        "v1",
        serde_json::json!({})
    )
    .is_err());
}

#[test]
fn snapshots_of_another_schema_are_refused() {
    let world = created();
    let mut data = world.contact.encode();
    assert_eq!(
        event_model::Contact::decode(data.clone()).unwrap(),
        world.contact
    );
    data["schema_version"] = serde_json::json!(0);
    assert!(event_model::Contact::decode(data).is_err());
    assert!(
        event_model::Session::decode(world.contact.encode()).is_err(),
        "a contact snapshot is not a session's"
    );
}

#[test]
fn contact_events_fold_deletion_time() {
    let world = created();
    let mut view = world.contact.view.clone();
    view.apply(&ContactEvent::Deleted { reason: None }, t(9));
    assert_eq!(view.deleted_at, Some(t(9)));
    assert_eq!(view.updated_at, Some(t(9)));
}
