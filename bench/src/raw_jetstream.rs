//! Baseline (b): the same messages the relay published, through a raw JetStream loop on a stream
//! of their own: published with awaited acks (windows of the relay's batch size), then consumed
//! by one durable pull consumer per partition (the workers' batch size and ack-pending limit),
//! each message acked. No database, no decoding.

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self};
use bytes::Bytes;
use futures::StreamExt;
use platform::nats::{StreamSettings, HEADER_TENANT};

pub struct Message {
    pub subject: String,
    pub partition: u32,
    pub id: String,
    pub tenant: String,
    pub payload: Bytes,
}

pub struct Timings {
    pub publish: Duration,
    pub consume: Duration,
}

pub async fn publish_and_consume(
    js: &jetstream::Context,
    settings: &StreamSettings,
    messages: &[Message],
    publish_window: usize,
    batch_size: usize,
) -> anyhow::Result<Timings> {
    platform::nats::ensure_stream(js, settings).await?;
    let started = Instant::now();
    for window in messages.chunks(publish_window) {
        let mut acks = Vec::with_capacity(window.len());
        for m in window {
            let message = PublishMessage::build()
                .payload(m.payload.clone())
                .message_id(m.id.as_str())
                .header(HEADER_TENANT, m.tenant.as_str());
            acks.push(js.send_publish(m.subject.clone(), message).await?);
        }
        for ack in futures::future::join_all(acks.into_iter().map(IntoFuture::into_future)).await {
            ack?;
        }
    }
    let publish = started.elapsed();

    let mut per_partition = vec![0usize; settings.partitions as usize];
    for m in messages {
        per_partition[m.partition as usize] += 1;
    }
    let stream = js.get_stream(&settings.name).await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (partition, expected) in per_partition.into_iter().enumerate() {
        let stream = stream.clone();
        let filter = settings.partition_filter(partition as u32);
        tasks.push(tokio::spawn(async move {
            if expected == 0 {
                return Ok::<_, anyhow::Error>(());
            }
            let name = format!("bench-p{partition}");
            let consumer: jetstream::consumer::PullConsumer = stream
                .get_or_create_consumer(
                    &name,
                    pull::Config {
                        durable_name: Some(name.clone()),
                        filter_subject: filter,
                        ack_policy: AckPolicy::Explicit,
                        deliver_policy: DeliverPolicy::All,
                        ack_wait: Duration::from_secs(30),
                        max_ack_pending: (batch_size * 4) as i64,
                        ..Default::default()
                    },
                )
                .await?;
            let messages = consumer
                .stream()
                .max_messages_per_batch(batch_size)
                .heartbeat(Duration::from_secs(5))
                .expires(Duration::from_secs(30))
                .messages()
                .await?;
            let mut batches = messages.ready_chunks(batch_size);
            let mut seen = 0;
            while seen < expected {
                let Some(batch) = batches.next().await else {
                    anyhow::bail!("message stream ended");
                };
                for message in batch {
                    let message = message.map_err(|e| anyhow::anyhow!("receiving: {e}"))?;
                    message
                        .ack()
                        .await
                        .map_err(|e| anyhow::anyhow!("ack: {e}"))?;
                    seen += 1;
                }
            }
            Ok(())
        }));
    }
    for task in futures::future::join_all(tasks).await {
        task??;
    }
    Ok(Timings {
        publish,
        consume: started.elapsed(),
    })
}
