//! `X-Broker-API-Originating-Identity`: `<platform> <base64 of a JSON object>`. Malformed values are
//! refused with 400 before anything changes; Cloud Foundry and Kubernetes identities are accepted.

use e2e::*;
use reqwest::Method;
use serde_json::json;

const HEADER: &str = "X-Broker-API-Originating-Identity";

#[tokio::test]
async fn given_a_malformed_originating_identity_when_mutating_then_400_and_nothing_changes() {
    bounded(async {
        let broker = Broker::start_default().await;
        let c = broker.client("cf1");
        let id = unique_id("oi-inst");
        let bid = unique_id("oi-bind");
        c.put(&instance_path(&id), &provision_body(SMALL, None))
            .await
            .expect(201);
        c.put(&binding_path(&id, &bid), &bind_body(SMALL, None))
            .await
            .expect(201);

        let malformed = [
            "cloudfoundry".to_owned(),
            "cloudfoundry !!!not-base64!!!".to_owned(),
            originating_identity("cloudfoundry", &json!([1, 2])),
            originating_identity("cloudfoundry", &json!("user")),
            format!("cloudfoundry {}", "bm90IGpzb24="), // base64("not json")
            format!(
                " {}",
                originating_identity("", &json!({"user_id": "u"})).trim()
            ),
        ];
        let new_id = unique_id("oi-new");
        for value in &malformed {
            let requests = [
                c.request(Method::PUT, &instance_path(&new_id))
                    .json(&provision_body(SMALL, None)),
                c.request(Method::PATCH, &instance_path(&id))
                    .json(&json!({"service_id": PG_SERVICE, "parameters": {"storage_gb": 2}})),
                c.request(Method::PUT, &binding_path(&id, "oi-new-bind"))
                    .json(&bind_body(SMALL, None)),
                c.request(Method::DELETE, &unbind_path(&id, &bid, SMALL, false)),
                c.request(Method::DELETE, &deprovision_path(&id, SMALL, false)),
            ];
            for rb in requests {
                let r = send(rb.header(HEADER, value.as_str())).await;
                assert_eq!(r.status, 400, "identity {value:?}: {}", r.text);
                r.expect_error(400, None);
            }
        }
        c.get(&instance_path(&new_id)).await.expect(404);
        let got = c.get(&instance_path(&id)).await;
        got.expect(200);
        // Only the owner's sharing view (DESIGN §7): the refused PATCH added no parameter.
        assert_eq!(
            own_parameters(&got.json),
            serde_json::json!({}),
            "{}",
            got.text
        );
        c.get(&binding_path(&id, &bid)).await.expect(200);
        c.get(&binding_path(&id, "oi-new-bind")).await.expect(404);
    })
    .await;
}

#[tokio::test]
async fn given_valid_cloud_foundry_and_kubernetes_identities_when_mutating_then_the_requests_succeed()
 {
    bounded(async {
        let broker = Broker::start_default().await;

        // Cloud Foundry
        let cf = broker.client("cf1");
        let cf_identity = originating_identity(
            "cloudfoundry",
            &json!({"user_id": "683ea748-3092-4ff4-b656-39cacc4d5360"}),
        );
        let id = unique_id("oi-cf");
        let bid = unique_id("oi-cf-bind");
        let with = |rb: reqwest::RequestBuilder| rb.header(HEADER, cf_identity.as_str());
        send(with(
            cf.request(Method::PUT, &instance_path(&id))
                .json(&provision_body(SMALL, None)),
        ))
        .await
        .expect(201);
        send(with(cf.request(Method::PATCH, &instance_path(&id)).json(
            &json!({"service_id": PG_SERVICE, "parameters": {"storage_gb": 2}}),
        )))
        .await
        .expect(200);
        let bound = send(with(
            cf.request(Method::PUT, &binding_path(&id, &bid))
                .json(&bind_body(SMALL, None)),
        ))
        .await;
        bound.expect(201);
        assert!(bound.json["credentials"].is_object(), "{}", bound.text);
        send(with(cf.request(
            Method::DELETE,
            &unbind_path(&id, &bid, SMALL, false),
        )))
        .await
        .expect(200);
        send(with(cf.request(
            Method::DELETE,
            &deprovision_path(&id, SMALL, false),
        )))
        .await
        .expect(200);

        // Kubernetes, with the kubernetes context, asynchronously
        let ks = broker.client("ks2");
        let k8s_identity = originating_identity(
            "kubernetes",
            &json!({"username": "duke", "uid": "c2dde242-5ce4-11e7-988c-000c2946f14f",
                    "groups": ["admin", "dev"], "extra": {"mydata": ["data1", "data3"]}}),
        );
        let with = |rb: reqwest::RequestBuilder| rb.header(HEADER, k8s_identity.as_str());
        let id = unique_id("oi-k8s");
        let accepted = send(with(
            ks.request(
                Method::PUT,
                &format!("{}?accepts_incomplete=true", instance_path(&id)),
            )
            .json(&provision_body_k8s(STANDARD, Some(delay(1)))),
        ))
        .await;
        accepted.expect(202);
        let done = ks.poll_until_final(&instance_last_op_path(&id)).await;
        assert_eq!(done.state(), "succeeded", "{}", done.text);
        let bid = unique_id("oi-k8s-bind");
        let mut bind = bind_body(STANDARD, None);
        bind["context"] = json!({"platform": "kubernetes", "namespace": "namespace-e2e",
                                 "clusterid": "cluster-e2e"});
        send(with(
            ks.request(Method::PUT, &binding_path(&id, &bid))
                .json(&bind),
        ))
        .await
        .expect(201);
        let got = ks.get(&instance_path(&id)).await;
        got.expect(200);

        // a minimal identity (empty object) is well-formed too
        let minimal = originating_identity("kubernetes", &json!({}));
        send(
            ks.request(Method::DELETE, &unbind_path(&id, &bid, STANDARD, false))
                .header(HEADER, minimal),
        )
        .await
        .expect(200);
    })
    .await;
}
