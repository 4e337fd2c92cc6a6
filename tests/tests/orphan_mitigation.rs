//! Orphan mitigation: a DELETE of an instance or binding that is still being created stops the
//! creation (its operation reports `failed`) and deletes the resource.

use e2e::*;
use serde_json::json;

#[tokio::test]
async fn given_an_instance_being_provisioned_when_deleted_asynchronously_then_202_the_create_fails_and_the_delete_ends_in_410()
 {
    bounded(async {
        let broker = Broker::start_default().await;
        let c = broker.client("cf1");
        let id = unique_id("om-inst");
        let created = c
            .put(
                &format!("{}?accepts_incomplete=true", instance_path(&id)),
                &provision_body(STANDARD, Some(delay(3))),
            )
            .await;
        created.expect(202);
        let create_op = created.operation();

        let deleting = c.delete(&deprovision_path(&id, STANDARD, true)).await;
        deleting.expect(202);
        let delete_op = deleting.operation();
        assert_ne!(delete_op, create_op);

        // the create's operation reports failed, with a description
        let create = c
            .get(&format!(
                "{}?operation={create_op}",
                instance_last_op_path(&id)
            ))
            .await;
        create.expect(200);
        assert_eq!(create.state(), "failed", "{}", create.text);
        assert!(!create.description().is_empty(), "{}", create.text);

        // the latest operation is the delete, in progress
        let latest = c.get(&instance_last_op_path(&id)).await;
        latest.expect(200);
        assert_eq!(latest.state(), "in progress", "{}", latest.text);

        let gone = c
            .poll_until_final(&format!(
                "{}?operation={delete_op}",
                instance_last_op_path(&id)
            ))
            .await;
        gone.expect(410);
        c.get(&instance_last_op_path(&id)).await.expect(410);
        c.get(&instance_path(&id)).await.expect(404);
        // past the time the provision would have finished, it still did not come back
        let create = c
            .get(&format!(
                "{}?operation={create_op}",
                instance_last_op_path(&id)
            ))
            .await;
        assert_eq!(create.state(), "failed", "{}", create.text);
        c.delete(&deprovision_path(&id, STANDARD, true))
            .await
            .expect(410);
    })
    .await;
}

#[tokio::test]
async fn given_an_instance_being_provisioned_when_deleted_synchronously_then_200_and_the_create_reports_failed()
 {
    bounded(async {
        let broker = Broker::start_default().await;
        let c = broker.client("cf1");
        let id = unique_id("om-sync");
        let created = c
            .put(
                &format!("{}?accepts_incomplete=true", instance_path(&id)),
                &provision_body(SMALL, Some(delay(3))),
            )
            .await;
        created.expect(202);
        let create_op = created.operation();

        // the small plan deletes synchronously
        let deleted = c.delete(&deprovision_path(&id, SMALL, false)).await;
        deleted.expect(200);
        assert_eq!(deleted.json, json!({}));
        let create = c
            .get(&format!(
                "{}?operation={create_op}",
                instance_last_op_path(&id)
            ))
            .await;
        create.expect(200);
        assert_eq!(create.state(), "failed", "{}", create.text);
        c.get(&instance_last_op_path(&id)).await.expect(410);
        c.get(&instance_path(&id)).await.expect(404);
    })
    .await;
}

#[tokio::test]
async fn given_a_binding_being_created_when_unbound_then_202_the_bind_fails_and_the_unbind_ends_in_410()
 {
    bounded(async {
        let broker = Broker::start_default().await;
        let c = broker.client("cf1");
        let id = unique_id("om-ab");
        let bid = unique_id("om-bind");
        c.put(&instance_path(&id), &provision_body(ASYNC_BINDINGS, None))
            .await
            .expect(201);
        let binding = c
            .put(
                &format!("{}?accepts_incomplete=true", binding_path(&id, &bid)),
                &bind_body(ASYNC_BINDINGS, Some(delay(3))),
            )
            .await;
        binding.expect(202);
        let bind_op = binding.operation();

        let unbinding = c
            .delete(&unbind_path(&id, &bid, ASYNC_BINDINGS, true))
            .await;
        unbinding.expect(202);
        let unbind_op = unbinding.operation();
        assert_ne!(unbind_op, bind_op);

        let lo_path = binding_last_op_path(&id, &bid);
        let bind = c.get(&format!("{lo_path}?operation={bind_op}")).await;
        bind.expect(200);
        assert_eq!(bind.state(), "failed", "{}", bind.text);
        assert!(!bind.description().is_empty(), "{}", bind.text);
        let latest = c.get(&lo_path).await;
        latest.expect(200);
        assert_eq!(latest.state(), "in progress", "{}", latest.text);

        let gone = c
            .poll_until_final(&format!("{lo_path}?operation={unbind_op}"))
            .await;
        gone.expect(410);
        c.get(&lo_path).await.expect(410);
        c.get(&binding_path(&id, &bid)).await.expect(404);
        let bind = c.get(&format!("{lo_path}?operation={bind_op}")).await;
        assert_eq!(bind.state(), "failed", "{}", bind.text);
        // the instance is untouched and can be deleted now
        c.get(&instance_path(&id)).await.expect(200);
        c.delete(&deprovision_path(&id, ASYNC_BINDINGS, false))
            .await
            .expect(200);
    })
    .await;
}

#[tokio::test]

async fn given_a_creation_cancelled_by_a_delete_when_fetching_during_the_delete_then_404() {
    bounded(async {
        let broker = Broker::start_default().await;
        let c = broker.client("cf1");

        let id = unique_id("omg-inst");
        c.put(
            &format!("{}?accepts_incomplete=true", instance_path(&id)),
            &provision_body(STANDARD, Some(delay(3))),
        )
        .await
        .expect(202);
        c.delete(&deprovision_path(&id, STANDARD, true))
            .await
            .expect(202);
        // the provision never succeeded: the instance does not exist
        c.get(&instance_path(&id)).await.expect_error(404, None);

        let ab = unique_id("omg-ab");
        let bid = unique_id("omg-bind");
        c.put(&instance_path(&ab), &provision_body(ASYNC_BINDINGS, None))
            .await
            .expect(201);
        c.put(
            &format!("{}?accepts_incomplete=true", binding_path(&ab, &bid)),
            &bind_body(ASYNC_BINDINGS, Some(delay(3))),
        )
        .await
        .expect(202);
        c.delete(&unbind_path(&ab, &bid, ASYNC_BINDINGS, true))
            .await
            .expect(202);
        // the bind never succeeded: the binding does not exist (and has no credentials)
        c.get(&binding_path(&ab, &bid))
            .await
            .expect_error(404, None);
    })
    .await;
}
