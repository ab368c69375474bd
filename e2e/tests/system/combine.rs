//! The live batches of several partitions, written together: one read and one write for the
//! group, each batch still answered (and reported) on its own, a batch the store does not back
//! handed back unwritten while the others are written.

use e2e::TestSystem;
use event_model::EventEnvelope;
use futures::future::join_all;
use platform::event_store::EventStore;
use projection_service::projections::BatchReport;
use projection_service::worker::{Combined, Combiner};
use serde_json::json;

fn recorded(family: &str, labels: &[&str]) -> f64 {
    e2e::sample(&platform::health::metrics_handle().render(), family, labels)
}

fn report_of(answer: &Combined) -> BatchReport {
    match answer {
        Combined::Applied { report, .. } => *report,
        Combined::Declined(reason) => panic!("declined: {reason}"),
    }
}

/// On the test's one thread the combining task runs only once every batch below is queued, so
/// they make one group.
#[tokio::test(flavor = "current_thread")]
async fn live_batches_of_several_partitions_are_written_together_and_each_answered_on_its_own() {
    let mut system = TestSystem::start().await;
    system.stop_projection().await;
    let store = EventStore::new(system.db.pool.clone());
    let mut streams: Vec<Vec<EventEnvelope>> = Vec::new();
    for i in 0..4 {
        let contact = system
            .create_contact(json!({"name": format!("Combined {i}")}))
            .await;
        let reply = system
            .command(
                reqwest::Method::POST,
                &format!("/contacts/{contact}/tags"),
                Some(json!({"tag": "vip"})),
            )
            .await;
        assert_eq!(reply.status, reqwest::StatusCode::OK, "{}", reply.body);
        streams.push(system.contact_events(contact).await);
    }
    let combiner = Combiner::start(store, system.keys());
    let groups = || recorded("projection_combined_batches_count", &[]);
    let batches = || recorded("projection_combined_batches_sum", &[]);
    let (groups_before, batches_before) = (groups(), batches());

    // Contact 0's second event alone (its first is filled in from the store), contacts 1 and 2
    // whole: one group, each batch reported as if it had gone alone.
    let parts = [
        streams[0][1..].to_vec(),
        streams[1].clone(),
        streams[2].clone(),
    ];
    let answers = join_all(parts.iter().map(|p| combiner.apply(p))).await;
    assert_eq!(groups() - groups_before, 1.0, "one group");
    assert_eq!(batches() - batches_before, 3.0, "of three batches");
    let reports: Vec<BatchReport> = answers.iter().map(report_of).collect();
    // The filled-in event counts for the contacts projection of the batch that needed it.
    assert_eq!(
        reports[0],
        BatchReport {
            applied: 5,
            duplicates: 0
        }
    );
    assert_eq!(
        reports[1],
        BatchReport {
            applied: 8,
            duplicates: 0
        }
    );
    assert_eq!(
        reports[2],
        BatchReport {
            applied: 8,
            duplicates: 0
        }
    );
    for stream in &streams[..3] {
        let contact = stream[0].aggregate_id;
        let version = system
            .count(&format!(
                "select version::bigint from contacts where id = '{contact}'"
            ))
            .await;
        assert_eq!(version, 2, "contact {contact} at its last version");
    }
    let audited = system.rows("domain_event_logs").await;
    assert_eq!(
        audited, 5,
        "an audit row for each event applied to the audit log"
    );

    // Delivered again: nothing applied, every pair a duplicate of its own batch.
    let answers = join_all(parts.iter().map(|p| combiner.apply(p))).await;
    let reports: Vec<BatchReport> = answers.iter().map(report_of).collect();
    assert_eq!(
        reports[0],
        BatchReport {
            applied: 0,
            duplicates: 4
        }
    );
    assert_eq!(
        reports[1],
        BatchReport {
            applied: 0,
            duplicates: 8
        }
    );
    assert_eq!(
        reports[2],
        BatchReport {
            applied: 0,
            duplicates: 8
        }
    );

    // A mutated copy of a stored event beside a clean batch: the clean one is written, the other
    // handed back to its worker with nothing of it written.
    let mut mutated = streams[0][0].clone();
    mutated.data = json!({"tag": "forged"});
    let rejected_before = recorded(
        "projection_combined_declined_total",
        &["reason=\"rejected\""],
    );
    let clean = streams[3].clone();
    let answers = join_all([
        combiner.apply(&clean),
        combiner.apply(std::slice::from_ref(&mutated)),
    ])
    .await;
    assert_eq!(
        report_of(&answers[0]),
        BatchReport {
            applied: 8,
            duplicates: 0
        }
    );
    assert!(matches!(answers[1], Combined::Declined("rejected")));
    assert_eq!(
        recorded(
            "projection_combined_declined_total",
            &["reason=\"rejected\""]
        ) - rejected_before,
        1.0
    );
    let forged = system.rows("contacts where tags ? 'forged'").await;
    assert_eq!(forged, 0, "nothing of the mutated copy written");
    let audited = system.rows("domain_event_logs").await;
    assert_eq!(audited, 7, "the clean batch's two audit rows, and no other");
}
