//! Tenant isolation: every tenant has its own namespace of instance and binding ids; guessing
//! another tenant's ids reveals and changes nothing.

use e2e::*;
use serde_json::json;

#[tokio::test]
async fn given_cf1s_instance_when_cf2_uses_the_same_id_then_it_sees_nothing_and_gets_its_own_instance()
 {
    bounded(async {
        let broker = Broker::start_default().await;
        let cf1 = broker.client("cf1");
        let cf2 = broker.client("cf2");
        let ks2 = broker.client("ks2");
        let id = unique_id("shared-id");
        cf1.put(
            &instance_path(&id),
            &provision_body(SMALL, Some(json!({"storage_gb": 7}))),
        )
        .await
        .expect(201);

        for other in [&cf2, &ks2] {
            other.get(&instance_path(&id)).await.expect_error(404, None);
            other
                .get(&instance_last_op_path(&id))
                .await
                .expect_error(404, None);
            other
                .delete(&deprovision_path(&id, SMALL, false))
                .await
                .expect_error(410, None);
            other
                .patch(
                    &instance_path(&id),
                    &json!({"service_id": PG_SERVICE, "parameters": {"storage_gb": 99}}),
                )
                .await
                .expect_error(404, None);
        }

        // cf2 provisions its own instance under the same id: 201, not 200 or 409
        let own = cf2
            .put(
                &instance_path(&id),
                &provision_body(SMALL, Some(json!({"storage_gb": 3}))),
            )
            .await;
        own.expect(201);
        let ks2_own = ks2
            .put(
                &instance_path(&id),
                &provision_body_k8s(ASYNC_BINDINGS, None),
            )
            .await;
        ks2_own.expect(201);

        let mine = cf1.get(&instance_path(&id)).await;
        mine.expect(200);
        assert_eq!(own_parameters(&mine.json), json!({"storage_gb": 7}));
        assert_eq!(mine.json["plan_id"], SMALL);
        let theirs = cf2.get(&instance_path(&id)).await;
        theirs.expect(200);
        assert_eq!(own_parameters(&theirs.json), json!({"storage_gb": 3}));
        let k8s = ks2.get(&instance_path(&id)).await;
        k8s.expect(200);
        assert_eq!(k8s.json["plan_id"], ASYNC_BINDINGS);

        // cf2 deletes its instance; cf1's stays
        cf2.delete(&deprovision_path(&id, SMALL, false))
            .await
            .expect(200);
        cf2.get(&instance_path(&id)).await.expect(404);
        let mine = cf1.get(&instance_path(&id)).await;
        mine.expect(200);
        assert_eq!(own_parameters(&mine.json), json!({"storage_gb": 7}));
        ks2.get(&instance_path(&id)).await.expect(200);
    })
    .await;
}

#[tokio::test]
async fn given_cf1s_binding_when_another_tenant_uses_the_same_ids_then_it_sees_nothing_and_cf1s_credentials_stay()
 {
    bounded(async {
        let broker = Broker::start_default().await;
        let cf1 = broker.client("cf1");
        let cf2 = broker.client("cf2");
        let ks2 = broker.client("ks2");
        let id = unique_id("shared-inst");
        let bid = unique_id("shared-bind");
        cf1.put(&instance_path(&id), &provision_body(SMALL, None))
            .await
            .expect(201);
        let first = cf1
            .put(&binding_path(&id, &bid), &bind_body(SMALL, None))
            .await;
        first.expect(201);

        // ks2 has no such instance: nothing is visible, nothing can be bound or deleted
        ks2.get(&binding_path(&id, &bid))
            .await
            .expect_error(404, None);
        ks2.get(&binding_last_op_path(&id, &bid))
            .await
            .expect_error(404, None);
        ks2.delete(&unbind_path(&id, &bid, SMALL, false))
            .await
            .expect_error(410, None);
        let r = ks2
            .put(&binding_path(&id, &bid), &bind_body(SMALL, None))
            .await;
        assert!(
            (400..500).contains(&r.status) && r.status != 409,
            "bind on another tenant's instance: {} {}",
            r.status,
            r.text
        );
        r.expect_error(r.status, None);

        // cf2 has its own instance with the same id: same views, then its own binding
        cf2.put(&instance_path(&id), &provision_body(SMALL, None))
            .await
            .expect(201);
        cf2.get(&binding_path(&id, &bid))
            .await
            .expect_error(404, None);
        cf2.get(&binding_last_op_path(&id, &bid))
            .await
            .expect_error(404, None);
        cf2.delete(&unbind_path(&id, &bid, SMALL, false))
            .await
            .expect_error(410, None);
        let second = cf2
            .put(&binding_path(&id, &bid), &bind_body(SMALL, None))
            .await;
        second.expect(201);
        assert_ne!(
            second.json["credentials"]["password"],
            first.json["credentials"]["password"]
        );

        let mine = cf1.get(&binding_path(&id, &bid)).await;
        mine.expect(200);
        assert_eq!(mine.json["credentials"], first.json["credentials"]);

        cf2.delete(&unbind_path(&id, &bid, SMALL, false))
            .await
            .expect(200);
        let mine = cf1.get(&binding_path(&id, &bid)).await;
        mine.expect(200);
        assert_eq!(mine.json["credentials"], first.json["credentials"]);
        // cf1's binding is still idempotent: same PUT, 200, same credentials
        let again = cf1
            .put(&binding_path(&id, &bid), &bind_body(SMALL, None))
            .await;
        again.expect(200);
        assert_eq!(again.json["credentials"], first.json["credentials"]);
    })
    .await;
}
