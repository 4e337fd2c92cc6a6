//! The SQS adapter of the queue port: message bodies carry only ids; delays are capped at SQS's 900 s
//! (the domain re-sends for longer waits); receipts acknowledge by deleting the message.

use crate::ports::queue::MAX_DELAY;
use crate::ports::{Delivery, Queue, QueueError};
use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::MessageSystemAttributeName;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct SqsQueue {
    client: Client,
    url: String,
}

fn unavailable<E: ProvideErrorMetadata, R>(what: &str, e: &SdkError<E, R>) -> QueueError {
    let code = match e {
        SdkError::ServiceError(s) => s.err().code().unwrap_or("unknown").to_owned(),
        SdkError::TimeoutError(_) => "timeout".into(),
        SdkError::DispatchFailure(_) => "dispatch failure".into(),
        _ => "unknown".into(),
    };
    QueueError::Unavailable(format!("SQS {what} failed: {code}"))
}

impl SqsQueue {
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        SqsQueue {
            client,
            url: url.into(),
        }
    }

    /// Creates a queue and returns its URL (tests, local endpoints; the SAM template creates the real ones).
    pub async fn create(client: &Client, name: &str) -> Result<String, QueueError> {
        let out = client
            .create_queue()
            .queue_name(name)
            .send()
            .await
            .map_err(|e| unavailable("CreateQueue", &e))?;
        out.queue_url
            .ok_or_else(|| QueueError::Unavailable("CreateQueue returned no URL".into()))
    }
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send(&self, body: String, delay: Duration) -> Result<(), QueueError> {
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .delay_seconds(delay.min(MAX_DELAY).as_secs() as i32)
            .send()
            .await
            .map_err(|e| unavailable("SendMessage", &e))?;
        Ok(())
    }

    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .visibility_timeout(visibility.as_secs().max(1) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| unavailable("ReceiveMessage", &e))?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let receive_count = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1);
                Some(Delivery {
                    receipt: m.receipt_handle?,
                    body: m.body?,
                    receive_count,
                })
            })
            .collect())
    }

    async fn ack(&self, receipt: &str) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| unavailable("DeleteMessage", &e))?;
        Ok(())
    }
}
