//! Property tests: random command sequences, decided and folded, never break an invariant; and
//! folding from a snapshot equals folding from the first event; and the state a command leaves in
//! memory equals the state folded from its events as stored (what the command-service's
//! aggregate cache relies on).

mod support;

use event_model::contact::{NewContact, ProfilePatch};
use event_model::session::{NewMessage, Outcome};
use event_model::{
    Aggregate, Contact, ContactCommand, DomainEvent, EndReason, Session, SessionCommand,
    SessionStatus, Snapshot,
};
use proptest::prelude::*;
use support::{ctx_at, t, World};
use uuid::Uuid;

#[derive(Debug, Clone)]
enum Step {
    Tag(u8),
    Untag(u8),
    Rename(u8),
    Inbound { channel: i64, gap: i64 },
    Outbound { channel: i64, agent: u8, gap: i64 },
    Start { channel: i64 },
    Assign { channel: i64, agent: u8 },
    End { channel: i64 },
    Sweep { channel: i64, gap: i64 },
    Resolve { channel: i64 },
    Delete,
    Forget,
}

fn step() -> impl Strategy<Value = Step> {
    let channel = 1i64..4;
    prop_oneof![
        (0u8..6).prop_map(Step::Tag),
        (0u8..6).prop_map(Step::Untag),
        (0u8..3).prop_map(Step::Rename),
        (channel.clone(), 0i64..4_000).prop_map(|(channel, gap)| Step::Inbound { channel, gap }),
        (channel.clone(), 0u8..3, 0i64..4_000).prop_map(|(channel, agent, gap)| Step::Outbound {
            channel,
            agent,
            gap
        }),
        channel.clone().prop_map(|channel| Step::Start { channel }),
        (channel.clone(), 0u8..3).prop_map(|(channel, agent)| Step::Assign { channel, agent }),
        channel.clone().prop_map(|channel| Step::End { channel }),
        (channel.clone(), 0i64..4_000).prop_map(|(channel, gap)| Step::Sweep { channel, gap }),
        channel.prop_map(|channel| Step::Resolve { channel }),
        Just(Step::Delete),
        Just(Step::Forget),
    ]
}

/// Runs the steps; refusals are fine (they are rules doing their job), but an accepted command
/// must leave every invariant standing.
fn run(steps: &[Step]) -> World {
    let agents = [Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3)];
    let mut world = World::new();
    let mut now = 0i64;
    world
        .run_contact(
            ContactCommand::Create(NewContact {
                name: "P".into(),
                ..NewContact::default()
            }),
            &ctx_at(now),
        )
        .unwrap();
    for step in steps {
        now += 1;
        let session_on = |w: &World, channel: i64| w.contact.active_sessions.get(&channel).copied();
        let result = match step.clone() {
            Step::Tag(n) => world.run_contact(
                ContactCommand::AddTag {
                    tag: format!("t{n}"),
                },
                &ctx_at(now),
            ),
            Step::Untag(n) => world.run_contact(
                ContactCommand::RemoveTag {
                    tag: format!("t{n}"),
                },
                &ctx_at(now),
            ),
            Step::Rename(n) => world.run_contact(
                ContactCommand::UpdateProfile(ProfilePatch {
                    name: Some(Some(format!("n{n}"))),
                    ..Default::default()
                }),
                &ctx_at(now),
            ),
            Step::Inbound { channel, gap } => {
                now += gap;
                world.run_contact(
                    ContactCommand::RecordMessage {
                        channel_type_id: channel,
                        pipeline_id: None,
                        message: NewMessage {
                            message_id: None,
                            from_contact: true,
                            agent_id: None,
                            sent_at: t(now),
                            content: Default::default(),
                        },
                        new_session_id: Uuid::now_v7(),
                    },
                    &ctx_at(now),
                )
            }
            Step::Sweep { channel, gap } => {
                now += gap;
                match session_on(&world, channel) {
                    Some(s) => world.run_session(s, SessionCommand::EndIfIdle, &ctx_at(now)),
                    None => continue,
                }
            }
            Step::Outbound {
                channel,
                agent,
                gap,
            } => {
                now += gap;
                match session_on(&world, channel) {
                    Some(s) => world.run_session(
                        s,
                        SessionCommand::RecordMessage(NewMessage {
                            message_id: None,
                            from_contact: false,
                            agent_id: Some(agents[agent as usize]),
                            sent_at: t(now),
                            content: Default::default(),
                        }),
                        &ctx_at(now),
                    ),
                    None => continue,
                }
            }
            Step::Start { channel } => world.run_contact(
                ContactCommand::StartSession {
                    session_id: Uuid::now_v7(),
                    channel_type_id: channel,
                    pipeline_id: None,
                },
                &ctx_at(now),
            ),
            Step::Assign { channel, agent } => match session_on(&world, channel) {
                Some(s) => world.run_session(
                    s,
                    SessionCommand::AssignAgent {
                        agent_id: agents[agent as usize],
                        source: None,
                        strategy: None,
                        reason: None,
                    },
                    &ctx_at(now),
                ),
                None => continue,
            },
            Step::End { channel } => match session_on(&world, channel) {
                Some(s) => world.run_session(
                    s,
                    SessionCommand::End {
                        reason: EndReason::ManualClose,
                    },
                    &ctx_at(now),
                ),
                None => continue,
            },
            Step::Resolve { channel } => {
                // Resolve the most recent session on that channel, active or not.
                let last = world
                    .sessions
                    .iter()
                    .filter(|(_, s)| s.view.channel_type_id == channel)
                    .map(|(id, _)| *id)
                    .next_back();
                match last {
                    Some(s) => world.run_session(
                        s,
                        SessionCommand::SetOutcome(Outcome {
                            resolved: Some(true),
                            ..Default::default()
                        }),
                        &ctx_at(now),
                    ),
                    None => continue,
                }
            }
            Step::Delete => {
                world.run_contact(ContactCommand::Delete { reason: None }, &ctx_at(now))
            }
            Step::Forget => {
                world.run_contact(ContactCommand::Forget { reason: None }, &ctx_at(now))
            }
        };
        // A refusal is a rule doing its job; what matters is that accepted commands keep the invariants.
        drop(result);
        check_invariants(&world);
    }
    world
}

fn check_invariants(world: &World) {
    let contact = &world.contact;
    // The contact's stream and the sessions agree on which sessions are active.
    for (channel, id) in &contact.active_sessions {
        let session = &world.sessions[id];
        assert_eq!(
            session.view.status,
            SessionStatus::Active,
            "contact lists an inactive session"
        );
        assert_eq!(session.view.channel_type_id, *channel);
    }
    let active: Vec<_> = world
        .sessions
        .iter()
        .filter(|(_, s)| s.is_active())
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(
        active.len(),
        contact.active_sessions.len(),
        "an active session the contact does not know"
    );
    if contact.is_deleted() {
        assert!(
            contact.active_sessions.is_empty(),
            "a deleted contact keeps an open session"
        );
    }
    if contact.is_forgotten() {
        let v = &contact.view;
        assert!(contact.is_deleted(), "a forgotten contact is deleted");
        assert!(
            v.name.is_none() && v.email.is_none() && v.phone.is_none() && v.external_id.is_none(),
            "a forgotten contact keeps personal data"
        );
    }
    for session in world.sessions.values() {
        let v = &session.view;
        assert_eq!(
            v.message_count,
            v.messages_from_contact + v.messages_from_agent
        );
        assert!(v.agent_transfers >= 0 && v.duration_seconds >= 0);
        let mut ids = v.agent_ids.clone();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), v.agent_ids.len(), "agent_ids is a set");
        assert!(
            !v.resolved || v.status == SessionStatus::Ended,
            "resolved while active"
        );
        assert_eq!(v.ended_at.is_some(), v.status == SessionStatus::Ended);
        if let (Some(c), Some(a)) = (v.first_contact_message_at, v.first_agent_response_at) {
            assert!(
                v.agent_response_time_seconds.is_some() != v.contact_wait_time_seconds.is_some()
            );
            assert_eq!(
                v.agent_response_time_seconds.unwrap_or(0)
                    + v.contact_wait_time_seconds.unwrap_or(0),
                (a - c).num_seconds().abs()
            );
        }
    }
    // Versions count the events of each stream.
    let contact_events = world
        .history
        .iter()
        .filter(|e| matches!(e.event, DomainEvent::Contact(_)))
        .count();
    assert_eq!(contact.version as usize, contact_events);
}

fn fold_contact(world: &World, from: Contact, skip: usize) -> Contact {
    let mut contact = from;
    for (i, e) in world
        .history
        .iter()
        .filter(|e| e.aggregate_id == world.contact_id)
        .enumerate()
        .skip(skip)
    {
        if let DomainEvent::Contact(ev) = &e.event {
            contact.apply(i as i64 + 1, ev, t(0));
        }
    }
    contact
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_command_sequences_keep_every_invariant(steps in prop::collection::vec(step(), 1..60)) {
        run(&steps);
    }

    #[test]
    fn the_state_left_in_memory_equals_the_state_folded_from_the_stored_events(
        steps in prop::collection::vec(step(), 1..60),
    ) {
        let world = run(&steps);
        let mut contact = Contact::default();
        let mut sessions = std::collections::BTreeMap::<Uuid, Session>::new();
        for envelope in &world.stored {
            if envelope.aggregate_id == world.contact_id {
                contact.apply_envelope(envelope).unwrap();
            } else {
                sessions.entry(envelope.aggregate_id).or_default().apply_envelope(envelope).unwrap();
            }
        }
        prop_assert_eq!(&contact, &world.contact);
        prop_assert_eq!(&sessions, &world.sessions);
    }

    #[test]
    fn folding_from_a_snapshot_equals_folding_from_the_first_event(
        steps in prop::collection::vec(step(), 1..60),
        cut in 0usize..100,
    ) {
        let world = run(&steps);
        let full = fold_contact(&world, Contact::default(), 0);
        let n = full.version as usize;
        let cut = cut % (n + 1);
        let partial = fold_contact(&world, Contact::default(), 0);
        let at_cut = {
            let mut w = world.clone();
            w.history = w.history.iter().filter(|e| e.aggregate_id == world.contact_id).take(cut).cloned().collect();
            fold_contact(&w, Contact::default(), 0)
        };
        let restored = Contact::decode(at_cut.encode()).unwrap();
        prop_assert_eq!(&restored, &at_cut);
        let from_snapshot = fold_contact(&world, restored, cut);
        prop_assert_eq!(&from_snapshot, &full);
        prop_assert_eq!(&partial, &full);

        for (id, session) in &world.sessions {
            let events: Vec<_> = world.history.iter().filter(|e| e.aggregate_id == *id).collect();
            let half = events.len() / 2;
            let mut head = Session::default();
            for (i, e) in events.iter().enumerate().take(half) {
                if let DomainEvent::Session(ev) = &e.event { head.apply(i as i64 + 1, ev) }
            }
            let mut tail = Session::decode(head.encode()).unwrap();
            for (i, e) in events.iter().enumerate().skip(half) {
                if let DomainEvent::Session(ev) = &e.event { tail.apply(i as i64 + 1, ev) }
            }
            prop_assert_eq!(&tail, session);
        }
    }
}
