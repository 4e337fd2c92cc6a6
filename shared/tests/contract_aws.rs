//! The same store and queue contract suites against DynamoDB and SQS, on a moto server on loopback.
#![cfg(feature = "aws")]

use osb_broker::aws::testing::{kms_sealer, moto, unique_name};
use osb_broker::aws::{DynamoStore, SqsQueue};
use osb_broker::ports::{Queue, Store};
use std::sync::Arc;

async fn dynamodb() -> Arc<dyn Store> {
    let sdk = moto().sdk_config().await;
    // The store seals with KMS data keys (moto's KMS), as on AWS.
    let store = DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        unique_name("osb"),
        kms_sealer(&sdk).await,
    );
    store.create_table().await.expect("create table");
    Arc::new(store)
}

async fn sqs() -> Arc<dyn Queue> {
    let sdk = moto().sdk_config().await;
    let client = aws_sdk_sqs::Client::new(&sdk);
    let url = SqsQueue::create(&client, &unique_name("ops"))
        .await
        .expect("create queue");
    Arc::new(SqsQueue::new(client, url))
}

mod dynamodb_store {
    osb_broker::store_contract!(super::dynamodb());
}

mod sqs_queue {
    osb_broker::queue_contract!(super::sqs());
}
