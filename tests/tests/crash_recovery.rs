//! Crash recovery: the broker is killed (SIGKILL) while an operation runs and restarted on the same
//! data directory; the operation completes and everything committed before the crash is still there.

use e2e::*;
use serde_json::json;

#[tokio::test]
async fn given_an_async_provision_in_progress_when_the_broker_is_killed_and_restarted_then_it_succeeds()
 {
    bounded(async {
        let mut broker = Broker::start_default().await;
        let c = broker.client("cf1");
        let kept = unique_id("kept-inst");
        c.put(
            &instance_path(&kept),
            &provision_body(SMALL, Some(json!({"storage_gb": 9}))),
        )
        .await
        .expect(201);

        let id = unique_id("crash-inst");
        let accepted = c
            .put(
                &format!("{}?accepts_incomplete=true", instance_path(&id)),
                &provision_body(STANDARD, Some(delay(2))),
            )
            .await;
        accepted.expect(202);
        let op = accepted.operation();
        broker.kill();

        broker.restart().await;
        let c = broker.client("cf1");
        let done = c
            .poll_until_final(&format!("{}?operation={op}", instance_last_op_path(&id)))
            .await;
        done.expect(200);
        assert_eq!(done.state(), "succeeded", "{}", done.text);
        let got = c.get(&instance_path(&id)).await;
        got.expect(200);
        assert_eq!(got.json["plan_id"], STANDARD);

        let got = c.get(&instance_path(&kept)).await;
        got.expect(200);
        assert_eq!(own_parameters(&got.json), json!({"storage_gb": 9}));
        // the re-sent PUT after the crash is answered as for a finished provision
        c.put(
            &format!("{}?accepts_incomplete=true", instance_path(&id)),
            &provision_body(STANDARD, Some(delay(2))),
        )
        .await
        .expect(200);
    })
    .await;
}

#[tokio::test]
async fn given_an_async_bind_in_progress_when_the_broker_is_killed_and_restarted_then_the_binding_gets_its_credentials()
 {
    bounded(async {
        let mut broker = Broker::start_default().await;
        let c = broker.client("cf1");
        let id = unique_id("crash-ab");
        let bid = unique_id("crash-bind");
        c.put(&instance_path(&id), &provision_body(ASYNC_BINDINGS, None))
            .await
            .expect(201);
        let accepted = c
            .put(
                &format!("{}?accepts_incomplete=true", binding_path(&id, &bid)),
                &bind_body(ASYNC_BINDINGS, None),
            )
            .await;
        accepted.expect(202);
        broker.kill();

        broker.restart().await;
        let c = broker.client("cf1");
        let done = c.poll_until_final(&binding_last_op_path(&id, &bid)).await;
        done.expect(200);
        assert_eq!(done.state(), "succeeded", "{}", done.text);
        let got = c.get(&binding_path(&id, &bid)).await;
        got.expect(200);
        assert!(
            got.json["credentials"]["password"].is_string(),
            "{}",
            got.text
        );
    })
    .await;
}
