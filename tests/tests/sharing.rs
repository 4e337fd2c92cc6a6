//! Sharing instances through leases (DESIGN §7), end to end on the local broker with three tenants:
//! `cf1` and `cf2` (Cloud Foundry) and `ks2` (Kubernetes, with an originating identity header carrying a
//! username and groups).

use e2e::*;
use reqwest::Method;
use serde_json::{Value, json};

const OI: &str = "X-Broker-API-Originating-Identity";
const SA_USER: &str = "system:serviceaccount:catalog:service-catalog-controller-manager";

/// A Cloud Foundry provision body in org/space `org`/`space` (guids `<org>-guid`, `<space>-guid`).
fn cf_body(plan: &str, org: &str, space: &str, name: &str, parameters: Option<Value>) -> Value {
    let mut b = json!({
        "service_id": service_of(plan), "plan_id": plan,
        "organization_guid": format!("{org}-guid"), "space_guid": format!("{space}-guid"),
        "context": {"platform": "cloudfoundry",
            "organization_guid": format!("{org}-guid"), "organization_name": org,
            "space_guid": format!("{space}-guid"), "space_name": space, "instance_name": name}
    });
    if let Some(p) = parameters {
        b["parameters"] = p;
    }
    b
}

/// A Kubernetes provision body in `namespace`.
fn k8s_body(plan: &str, namespace: &str, parameters: Option<Value>) -> Value {
    let mut b = json!({
        "service_id": service_of(plan), "plan_id": plan,
        "organization_guid": "cluster-1", "space_guid": namespace,
        "context": {"platform": "kubernetes", "namespace": namespace, "clusterid": "cluster-1",
                    "instance_name": "k8s-db"}
    });
    if let Some(p) = parameters {
        b["parameters"] = p;
    }
    b
}

fn k8s_identity(username: &str, groups: &[&str]) -> String {
    originating_identity(
        "kubernetes",
        &json!({"username": username, "uid": "u-1", "groups": groups}),
    )
}

async fn k8s_put(c: &Client, id: &str, body: &Value, identity: &str) -> Resp {
    send(
        c.request(Method::PUT, &instance_path(id))
            .header(OI, identity)
            .json(body),
    )
    .await
}

/// Whether GET instance says it is a lease (of `owner`).
async fn lease_description(c: &Client, id: &str) -> Option<String> {
    let r = c.get(&instance_path(id)).await;
    r.expect(200);
    r.json["description"].as_str().map(str::to_owned)
}

fn owner_sharing_to() -> Value {
    json!({"x_osb_cmdb": {"sharing_to": [
        {"tenant": "cf2", "profile": "cloudfoundry", "org_name": "their_org", "space_name": "their_space",
         "org_guid": "their_org-guid", "space_guid": "their_space-guid", "instance_name": "x"},
        {"tenant": "cf2", "org-name": "wrong name ignored", "org_guid": "named-org-guid",
         "space_name": "any", "instance_name": "named-db"},
        {"tenant": "ks2", "profile": "kubernetes", "namespace": "my-namespace",
         "originating-identity-groups": "[\"system:serviceaccounts\",\"system:authenticated\"]",
         "originating_identity_username": SA_USER,
         "service_instance_guid": "k8s-lease-guid"}
    ]}})
}

#[tokio::test]
async fn given_sharing_to_rules_when_other_tenants_provision_then_every_rule_is_enforced() {
    bounded(async {
        let broker = Broker::start_default().await;
        let (cf1, cf2, ks2) = (
            broker.client("cf1"),
            broker.client("cf2"),
            broker.client("ks2"),
        );
        let owner = unique_id("owner");
        cf1.put(
            &instance_path(&owner),
            &cf_body(SMALL, "o1", "s1", "db", Some(owner_sharing_to())),
        )
        .await
        .expect(201);
        let expected = format!("This is a lease from instance {owner} in tenant cf1");

        // CF: org + space guids match (names next to guids are documentation) → lease, 201 at once.
        let l1 = unique_id("l1");
        let r = cf2
            .put(
                &instance_path(&l1),
                &cf_body(SMALL, "their_org", "their_space", "x", None),
            )
            .await;
        r.expect(201);
        assert_eq!(
            lease_description(&cf2, &l1).await.as_deref(),
            Some(expected.as_str())
        );
        let lo = cf2.get(&instance_last_op_path(&l1)).await;
        lo.expect(200);
        assert_eq!(
            (lo.state(), lo.description()),
            ("succeeded", expected.as_str())
        );

        // A wrong space guid, another tenant, another profile: no match → an ordinary instance.
        let n1 = unique_id("n1");
        cf2.put(
            &instance_path(&n1),
            &cf_body(SMALL, "their_org", "other_space", "x", None),
        )
        .await
        .expect(201);
        assert_eq!(lease_description(&cf2, &n1).await, None);
        let n2 = unique_id("n2");
        cf1.put(
            &instance_path(&n2),
            &cf_body(SMALL, "their_org", "their_space", "x", None),
        )
        .await
        .expect(201);
        assert_eq!(
            lease_description(&cf1, &n2).await,
            None,
            "tenant must match"
        );

        // Name wins only without its guid: org_guid given, the (wrong) org_name is ignored; instance_name must match.
        let l2 = unique_id("l2");
        cf2.put(
            &instance_path(&l2),
            &cf_body(SMALL, "named-org", "any", "named-db", None),
        )
        .await
        .expect(201);
        assert!(lease_description(&cf2, &l2).await.is_some());
        let n3 = unique_id("n3");
        cf2.put(
            &instance_path(&n3),
            &cf_body(SMALL, "named-org", "any", "other-db", None),
        )
        .await
        .expect(201);
        assert_eq!(
            lease_description(&cf2, &n3).await,
            None,
            "instance_name must match"
        );

        // Kubernetes: namespace, username, every group (given as a JSON-encoded string), instance guid.
        let good = k8s_identity(
            SA_USER,
            &["system:serviceaccounts", "system:authenticated", "x"],
        );
        for (id, ns, identity) in [
            (
                "k8s-miss-1",
                "my-namespace",
                k8s_identity(SA_USER, &["system:serviceaccounts"]),
            ),
            (
                "k8s-miss-2",
                "my-namespace",
                k8s_identity(
                    "someone-else",
                    &["system:serviceaccounts", "system:authenticated"],
                ),
            ),
            ("k8s-miss-3", "other-namespace", good.clone()),
            ("k8s-miss-4", "my-namespace", good.clone()), // service_instance_guid differs
        ] {
            k8s_put(&ks2, id, &k8s_body(SMALL, ns, None), &identity)
                .await
                .expect(201);
            assert_eq!(
                lease_description(&ks2, id).await,
                None,
                "{id} must not be a lease"
            );
        }
        k8s_put(
            &ks2,
            "k8s-lease-guid",
            &k8s_body(SMALL, "my-namespace", None),
            &good,
        )
        .await
        .expect(201);
        assert_eq!(
            lease_description(&ks2, "k8s-lease-guid").await.as_deref(),
            Some(expected.as_str())
        );

        // Same offering, other plan → 400 naming the expected plan.
        let r = cf2
            .put(
                &instance_path(&unique_id("p")),
                &cf_body(STANDARD, "their_org", "their_space", "x", None),
            )
            .await;
        r.expect_error(400, None);
        assert!(
            r.description().contains("expected plan 'small'"),
            "{}",
            r.text
        );

        // The owner sees every lease; cf2 and ks2 see none of it.
        let view = cf1.get(&instance_path(&owner)).await;
        view.expect(200);
        let leases = view.json["parameters"]["x_osb_cmdb"]["leases"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let ids: Vec<&str> = leases
            .iter()
            .filter_map(|l| l["instance_guid"].as_str())
            .collect();
        assert_eq!(ids.len(), 3, "{}", view.text);
        assert!(
            ids.contains(&l1.as_str())
                && ids.contains(&l2.as_str())
                && ids.contains(&"k8s-lease-guid")
        );
        let k8s = leases
            .iter()
            .find(|l| l["instance_guid"] == "k8s-lease-guid")
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            (
                k8s["tenant"].as_str(),
                k8s["profile"].as_str(),
                k8s["namespace"].as_str()
            ),
            (Some("ks2"), Some("kubernetes"), Some("my-namespace"))
        );
        let cf = leases
            .iter()
            .find(|l| l["instance_guid"] == l1.as_str())
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            (cf["org_name"].as_str(), cf["space_guid"].as_str()),
            (Some("their_org"), Some("their_space-guid"))
        );
        assert!(cf["created_at"].as_str().is_some_and(|d| d.contains('T')));
        let sets = view.json["parameters"]["x_osb_cmdb"]["sharing_to"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            sets[2]["originating_identity_groups"],
            json!(["system:serviceaccounts", "system:authenticated"])
        );
        let leased = cf2.get(&instance_path(&l1)).await;
        assert!(
            leased
                .json
                .get("parameters")
                .is_none_or(|p| p.get("x_osb_cmdb").is_none()),
            "{}",
            leased.text
        );
        cf2.get(&instance_path(&owner)).await.expect(404);
    })
    .await;
}

#[tokio::test]
async fn given_bad_sharing_parameters_then_400_naming_the_problem() {
    bounded(async {
        let broker = Broker::start_default().await;
        let cf1 = broker.client("cf1");
        for (params, needle) in [
            (json!({"x_osb_cmdb": {"sharing_to": [{"tenant": "cf2", "colour": "blue"}]}}), "colour"),
            (json!({"x_osb_cmdb": {"sharing_too": []}}), "sharing_too"),
            (json!({"x_osb_cmdb": {"sharing_to": [{"org_name": "o"}]}}), "tenant"),
            (json!({"x_osb_cmdb": {"sharing_to": [{"tenant": "cf2", "originating_identity_groups": "not json"}]}}), "originating_identity_groups"),
            // A set must pin one instance and where it lives (the trust model, docs/design.md).
            (json!({"x_osb_cmdb": {"sharing_to": [{"tenant": "cf2"}]}}), "must pin one instance"),
            (json!({"x_osb_cmdb": {"sharing_to": [{"tenant": "cf2", "space_guid": "s"}]}}), "'instance_name' or 'service_instance_guid'"),
            (json!({"x_osb_cmdb": {"sharing_to": [{"tenant": "cf2", "instance_name": "db"}]}}), "where the instance lives"),
            (json!({"x_osb_cmdb": {"sharing_to": [{"tenant": "nobody", "space_guid": "s", "instance_name": "db"}]}}), "not a tenant of this broker"),
        ] {
            let r = cf1.put(&instance_path(&unique_id("bad")), &cf_body(SMALL, "o", "s", "n", Some(params))).await;
            r.expect_error(400, None);
            assert!(r.description().contains(needle), "{needle}: {}", r.text);
        }
        // A non-shareable offering refuses sharing parameters.
        let r = cf1
            .put(&instance_path(&unique_id("q")), &cf_body(APP_BOUND, "o", "s", "n",
                Some(json!({"x_osb_cmdb": {"sharing_to": [{"tenant": "cf2", "space_guid": "s", "instance_name": "n"}]}}))))
            .await;
        r.expect_error(400, None);
        assert!(r.description().contains("not shareable"), "{}", r.text);
    })
    .await;
}

#[tokio::test]
async fn given_two_owners_sharing_with_the_same_request_then_409_names_their_tenants() {
    bounded(async {
        let broker = Broker::start_default().await;
        let (cf1, cf2, ks2) = (
            broker.client("cf1"),
            broker.client("cf2"),
            broker.client("ks2"),
        );
        let rule =
            json!({"x_osb_cmdb": {"sharing_to": [{"tenant": "cf2", "org_name": "o2", "space_name": "shared", "instance_name": "w"}]}});
        cf1.put(
            &instance_path("owner-a"),
            &cf_body(SMALL, "o", "s", "a", Some(rule.clone())),
        )
        .await
        .expect(201);
        ks2.put(
            &instance_path("owner-b"),
            &k8s_body(SMALL, "ns", Some(rule)),
        )
        .await
        .expect(201);
        let r = cf2
            .put(
                &instance_path("wants"),
                &cf_body(SMALL, "o2", "shared", "w", None),
            )
            .await;
        r.expect_error(409, None);
        assert!(
            r.description().contains("cf1") && r.description().contains("ks2"),
            "{}",
            r.text
        );
        cf2.get(&instance_path("wants")).await.expect(404);
        // Revoking one owner's rules (sharing_to: []) removes the ambiguity; existing leases stay.
        cf1.patch(
            &instance_path("owner-a"),
            &json!({"service_id": PG_SERVICE,
            "parameters": {"x_osb_cmdb": {"sharing_to": []}}}),
        )
        .await
        .expect(200);
        cf2.put(
            &instance_path("wants"),
            &cf_body(SMALL, "o2", "shared", "w", None),
        )
        .await
        .expect(201);
        assert_eq!(
            lease_description(&cf2, "wants").await.as_deref(),
            Some("This is a lease from instance owner-b in tenant ks2")
        );
        ks2.patch(
            &instance_path("owner-b"),
            &json!({"service_id": PG_SERVICE,
            "parameters": {"x-osb-cmdb": {"sharing-to": []}}}),
        )
        .await
        .expect(200);
        cf2.put(
            &instance_path("later"),
            &cf_body(SMALL, "o2", "shared", "w", None),
        )
        .await
        .expect(201);
        assert_eq!(
            lease_description(&cf2, "later").await,
            None,
            "revoked: no new lease"
        );
        assert!(
            lease_description(&cf2, "wants").await.is_some(),
            "the existing lease stays"
        );
    })
    .await;
}

/// The capture attempt of the review (issue 13): another tenant's rule never turns a provision into a
/// lease unless the provisioning tenant's operator consented (`accept_leases_from`); tokens still work.
#[tokio::test]
async fn given_a_rule_from_a_tenant_without_consent_then_the_provision_is_an_ordinary_instance() {
    bounded(async {
        let broker = Broker::start_default().await;
        let (cf1, cf2, ks2) = (
            broker.client("cf1"),
            broker.client("cf2"),
            broker.client("ks2"),
        );
        // cf1 accepts no one's rules: ks2's exact rule for cf1's next provision captures nothing.
        let rule = json!({"x_osb_cmdb": {"sharing_to": [
            {"tenant": "cf1", "space_guid": "s1-guid", "instance_name": "app-db"}]}});
        ks2.put(
            &instance_path("ks2-owner"),
            &k8s_body(SMALL, "ns", Some(rule)),
        )
        .await
        .expect(201);
        let mine = unique_id("mine");
        cf1.put(
            &instance_path(&mine),
            &cf_body(SMALL, "o1", "s1", "app-db", None),
        )
        .await
        .expect(201);
        assert_eq!(
            lease_description(&cf1, &mine).await,
            None,
            "cf1 never consented to ks2's rules"
        );
        // Another plan of the offering is an ordinary provision too, not a 400 from someone else's rule.
        let r = cf1
            .request(
                Method::PUT,
                &format!(
                    "{}?accepts_incomplete=true",
                    instance_path(&unique_id("other-plan"))
                ),
            )
            .json(&cf_body(STANDARD, "o1", "s1", "app-db", None));
        send(r).await.expect(202);
        // ks2 accepts cf1's rules only: cf2's rule for ks2 captures nothing either.
        let rule = json!({"x_osb_cmdb": {"sharing_to": [
            {"tenant": "ks2", "namespace": "team", "instance_name": "k8s-db"}]}});
        cf2.put(
            &instance_path("cf2-owner"),
            &cf_body(SMALL, "o", "s", "db", Some(rule)),
        )
        .await
        .expect(201);
        let theirs = unique_id("theirs");
        ks2.put(&instance_path(&theirs), &k8s_body(SMALL, "team", None))
            .await
            .expect(201);
        assert_eq!(
            lease_description(&ks2, &theirs).await,
            None,
            "ks2 does not accept cf2's rules"
        );
        // A sharing token is the leaser's own consent: accepted whatever accept_leases_from says.
        let token = token_of(&ks2, "ks2-owner").await.expect("a token");
        let leased = unique_id("leased");
        cf1.put(
            &instance_path(&leased),
            &cf_body(
                SMALL,
                "o1",
                "s1",
                "any",
                Some(json!({"sharing_token": token})),
            ),
        )
        .await
        .expect(201);
        assert_eq!(
            lease_description(&cf1, &leased).await.as_deref(),
            Some("This is a lease from instance ks2-owner in tenant ks2")
        );
    })
    .await;
}

/// A plan change in flight could complete under a new lease: no lease while the owner is updating.
#[tokio::test]
async fn given_an_owner_being_updated_then_a_lease_waits_for_the_update() {
    bounded(async {
        let broker = Broker::start_default().await;
        let (cf1, cf2) = (broker.client("cf1"), broker.client("cf2"));
        cf1.put(&instance_path("upd-owner"), &cf_body(SMALL, "o", "s", "db", None)).await.expect(201);
        let token = token_of(&cf1, "upd-owner").await.expect("a token");
        let r = cf1
            .request(Method::PATCH, &format!("{}?accepts_incomplete=true", instance_path("upd-owner")))
            .json(&json!({"service_id": PG_SERVICE, "parameters": {"simulate": {"delay_seconds": 30}}}));
        send(r).await.expect(202);
        let r = cf2
            .put(&instance_path("too-soon"), &cf_body(SMALL, "x", "y", "z", Some(json!({"sharing_token": token}))))
            .await;
        r.expect_error(422, None);
        assert!(r.description().contains("being updated"), "{}", r.text);
        cf2.get(&instance_path("too-soon")).await.expect(404);
    })
    .await;
}

async fn token_of(c: &Client, id: &str) -> Option<String> {
    let r = c.get(&instance_path(id)).await;
    r.expect(200);
    r.json["parameters"]["x_osb_cmdb"]["sharing_token"]["token"]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test]
async fn given_a_sharing_token_then_leases_until_it_expires_is_revoked_or_regenerated() {
    bounded(async {
        let broker = Broker::start("[sharing]\ntoken_lifetime_seconds = 3\n").await;
        let (cf1, cf2, ks2) = (broker.client("cf1"), broker.client("cf2"), broker.client("ks2"));
        cf1.put(&instance_path("owner"), &cf_body(SMALL, "o", "s", "db", Some(json!({"storage_gb": 5})))).await.expect(201);
        let view = cf1.get(&instance_path("owner")).await;
        let token = token_of(&cf1, "owner").await.expect("the owner sees its token");
        assert!(token.len() >= 43, "≥ 128 bits: {token}");
        assert!(view.json["parameters"]["x_osb_cmdb"]["sharing_token"]["expiration_date"].as_str().is_some_and(|d| d.contains('T')));
        assert_eq!(view.json["parameters"]["storage_gb"], 5);

        // Top-level and under x_osb_cmdb, from Cloud Foundry and Kubernetes.
        cf2.put(&instance_path("t1"), &cf_body(SMALL, "x", "y", "z", Some(json!({"sharing_token": token})))).await.expect(201);
        ks2.put(&instance_path("t2"), &k8s_body(SMALL, "ns", Some(json!({"x_osb_cmdb": {"sharing_token": token}})))).await.expect(201);
        assert!(lease_description(&ks2, "t2").await.is_some_and(|d| d.contains("instance owner in tenant cf1")));
        // Lease parameters never carry the token, nor the owner's parameters.
        let got = ks2.get(&instance_path("t2")).await;
        assert!(!got.text.contains(&token) && !got.text.contains("storage_gb"), "{}", got.text);
        // Wrong offering plan with a valid token → 400 naming the plan.
        let r = cf2.put(&instance_path("t3"), &cf_body(STANDARD, "x", "y", "z", Some(json!({"sharing_token": token})))).await;
        r.expect_error(400, None);
        assert!(r.description().contains("'small'"), "{}", r.text);

        // One message for invalid, expired and revoked; never the token.
        let invalid = cf2.put(&instance_path("bad"), &cf_body(SMALL, "x", "y", "z", Some(json!({"sharing_token": "osbst_guess"})))).await;
        invalid.expect_error(400, None);
        let message = invalid.description().to_owned();
        assert!(message.contains("invalid, expired or revoked") && !message.contains("guess"));

        // Regenerate: the old token stops, the new one works.
        cf1.patch(&instance_path("owner"), &json!({"service_id": PG_SERVICE, "parameters": {"x_osb_cmdb": {"sharing_token": "regenerate"}}})).await.expect(200);
        let fresh = token_of(&cf1, "owner").await.expect("new token");
        assert_ne!(fresh, token);
        let r = cf2.put(&instance_path("old"), &cf_body(SMALL, "x", "y", "z", Some(json!({"sharing_token": token})))).await;
        r.expect_error(400, None);
        assert_eq!(r.description(), message);
        cf2.put(&instance_path("t4"), &cf_body(SMALL, "x", "y", "z", Some(json!({"sharing_token": fresh})))).await.expect(201);

        // Expiry (3 s lifetime in this broker's configuration).
        tokio::time::sleep(std::time::Duration::from_millis(3200)).await;
        let r = cf2.put(&instance_path("late"), &cf_body(SMALL, "x", "y", "z", Some(json!({"sharing_token": fresh})))).await;
        r.expect_error(400, None);
        assert_eq!(r.description(), message);

        // Revoke: no token shown, none accepted; existing leases stay.
        cf1.patch(&instance_path("owner"), &json!({"service_id": PG_SERVICE, "parameters": {"x_osb_cmdb": {"sharing_token": "regenerate"}}})).await.expect(200);
        let third = token_of(&cf1, "owner").await.expect("token");
        cf1.patch(&instance_path("owner"), &json!({"service_id": PG_SERVICE, "parameters": {"x_osb_cmdb": {"sharing_token": "revoke"}}})).await.expect(200);
        assert_eq!(token_of(&cf1, "owner").await, None);
        let r = cf2.put(&instance_path("revoked"), &cf_body(SMALL, "x", "y", "z", Some(json!({"sharing_token": third})))).await;
        r.expect_error(400, None);
        assert_eq!(r.description(), message);
        for id in ["t1", "t4"] {
            assert!(lease_description(&cf2, id).await.is_some());
        }
        // The token never reaches the broker's log.
        assert!(!broker.log().contains(&token) && !broker.log().contains(&fresh));
    })
    .await;
}

#[tokio::test]
async fn given_a_lease_then_bindings_use_the_owner_and_a_purge_revokes_them() {
    bounded(async {
        let broker = Broker::start_default().await;
        let (cf1, cf2) = (broker.client("cf1"), broker.client("cf2"));
        cf1.put(
            &instance_path("owner-db"),
            &cf_body(SMALL, "o", "s", "db", Some(json!({"storage_gb": 3}))),
        )
        .await
        .expect(201);
        let owner_binding = cf1
            .put(
                &binding_path("owner-db", "owner-b"),
                &bind_body(SMALL, None),
            )
            .await;
        owner_binding.expect(201);
        let token = token_of(&cf1, "owner-db").await.expect("token");
        cf2.put(
            &instance_path("lease"),
            &cf_body(SMALL, "x", "y", "z", Some(json!({"sharing_token": token}))),
        )
        .await
        .expect(201);

        // Binding the lease: credentials of the owner's backing database, on the leaser's binding only.
        let b = cf2
            .put(&binding_path("lease", "lb"), &bind_body(SMALL, None))
            .await;
        b.expect(201);
        assert_eq!(
            b.json["credentials"]["name"],
            owner_binding.json["credentials"]["name"]
        );
        assert_eq!(b.json["credentials"]["name"], "db_ownerdb");
        assert_ne!(
            b.json["credentials"]["password"],
            owner_binding.json["credentials"]["password"]
        );
        // Isolation: the leaser cannot reach the owner's instance or bindings, the owner not the lease's.
        cf2.get(&instance_path("owner-db")).await.expect(404);
        cf2.get(&binding_path("owner-db", "owner-b"))
            .await
            .expect(404);
        cf1.get(&binding_path("lease", "lb")).await.expect(404);
        // A lease cannot change plan, nor take parameters.
        let r = cf2
            .patch(
                &instance_path("lease"),
                &json!({"service_id": PG_SERVICE, "plan_id": STANDARD}),
            )
            .await;
        r.expect_error(422, None);
        assert!(r.description().contains("cannot change plan"), "{}", r.text);
        // Unbind revokes; bind again for the purge.
        cf2.delete(&unbind_path("lease", "lb", SMALL, false))
            .await
            .expect(200);
        cf2.get(&binding_path("lease", "lb")).await.expect(404);
        cf2.put(&binding_path("lease", "lb2"), &bind_body(SMALL, None))
            .await
            .expect(201);

        // Listing an unknown lease → 400; listing none purges: the worker unbinds, the lease is orphaned.
        let r = cf1
            .patch(
                &instance_path("owner-db"),
                &json!({"service_id": PG_SERVICE,
            "parameters": {"x_osb_cmdb": {"leases": ["nope"]}}}),
            )
            .await;
        r.expect_error(400, None);
        assert!(
            r.description().contains("unknown lease 'nope'"),
            "{}",
            r.text
        );
        cf1.patch(
            &instance_path("owner-db"),
            &json!({"service_id": PG_SERVICE,
            "parameters": {"x_osb_cmdb": {"leases": []}}}),
        )
        .await
        .expect(200);
        let done = cf2
            .poll_until_final(&binding_last_op_path("lease", "lb2"))
            .await;
        assert_eq!(
            done.status, 410,
            "the purge's unbind finished: {}",
            done.text
        );
        cf2.get(&binding_path("lease", "lb2")).await.expect(404);
        let d = lease_description(&cf2, "lease").await.unwrap_or_default();
        assert!(d.contains("orphaned"), "{d}");
        let r = cf2
            .put(&binding_path("lease", "lb3"), &bind_body(SMALL, None))
            .await;
        r.expect_error(422, None);
        assert!(r.description().contains("orphaned"), "{}", r.text);
        let view = cf1.get(&instance_path("owner-db")).await;
        assert_eq!(view.json["parameters"]["x_osb_cmdb"]["leases"], json!([]));
        // The owner keeps its own binding; the orphan is deleted like any instance.
        cf1.get(&binding_path("owner-db", "owner-b"))
            .await
            .expect(200);
        cf2.delete(&deprovision_path("lease", SMALL, false))
            .await
            .expect(200);
        cf2.get(&instance_last_op_path("lease")).await.expect(410);
        cf1.delete(&unbind_path("owner-db", "owner-b", SMALL, false))
            .await
            .expect(200);
        cf1.delete(&deprovision_path("owner-db", SMALL, false))
            .await
            .expect(200);
    })
    .await;
}

#[tokio::test]
async fn given_an_owner_with_leases_then_delete_is_guarded_unless_purge_on_delete() {
    bounded(async {
        let broker = Broker::start_default().await;
        let (cf1, cf2, ks2) = (
            broker.client("cf1"),
            broker.client("cf2"),
            broker.client("ks2"),
        );
        cf1.put(
            &instance_path("guarded"),
            &cf_body(SMALL, "o", "s", "db", None),
        )
        .await
        .expect(201);
        let token = token_of(&cf1, "guarded").await.expect("token");
        cf2.put(
            &instance_path("lease-a"),
            &cf_body(SMALL, "x", "y", "z", Some(json!({"sharing_token": token}))),
        )
        .await
        .expect(201);
        ks2.put(
            &instance_path("lease-b"),
            &k8s_body(SMALL, "ns", Some(json!({"sharing_token": token}))),
        )
        .await
        .expect(201);
        let r = cf1.delete(&deprovision_path("guarded", SMALL, false)).await;
        r.expect_error(422, None);
        let d = r.description();
        assert!(
            d.contains("service instance can not be deleted as it is still shared with")
                && d.contains("lease-a in tenant cf2")
                && d.contains("lease-b in tenant ks2"),
            "{d}"
        );
        // The leasers delete their leases: the owner entry goes with them; then the owner can go.
        cf2.delete(&deprovision_path("lease-a", SMALL, false))
            .await
            .expect(200);
        ks2.delete(&deprovision_path("lease-b", SMALL, true))
            .await
            .expect(200);
        let view = cf1.get(&instance_path("guarded")).await;
        assert_eq!(view.json["parameters"]["x_osb_cmdb"]["leases"], json!([]));
        cf1.delete(&deprovision_path("guarded", SMALL, false))
            .await
            .expect(200);

        // purge_leases_on_delete set earlier: the delete purges and proceeds.
        cf1.put(
            &instance_path("purging"),
            &cf_body(SMALL, "o", "s", "db", None),
        )
        .await
        .expect(201);
        cf1.patch(
            &instance_path("purging"),
            &json!({"service_id": PG_SERVICE,
            "parameters": {"x_osb_cmdb": {"purge_leases_on_delete": true}}}),
        )
        .await
        .expect(200);
        let token = token_of(&cf1, "purging").await.expect("token");
        cf2.put(
            &instance_path("lease-c"),
            &cf_body(SMALL, "x", "y", "z", Some(json!({"sharing_token": token}))),
        )
        .await
        .expect(201);
        cf2.put(&binding_path("lease-c", "cb"), &bind_body(SMALL, None))
            .await
            .expect(201);
        cf1.delete(&deprovision_path("purging", SMALL, false))
            .await
            .expect(200);
        assert!(
            lease_description(&cf2, "lease-c")
                .await
                .unwrap_or_default()
                .contains("orphaned")
        );
        let done = cf2
            .poll_until_final(&binding_last_op_path("lease-c", "cb"))
            .await;
        assert_eq!(done.status, 410, "{}", done.text);
        // An orphan: unbind (already revoked → 410) and deprovision succeed.
        cf2.delete(&unbind_path("lease-c", "cb", SMALL, false))
            .await
            .expect(410);
        cf2.delete(&deprovision_path("lease-c", SMALL, false))
            .await
            .expect(200);
    })
    .await;
}

#[tokio::test]
async fn given_leases_racing_an_owner_delete_then_the_end_state_is_consistent() {
    bounded(async {
        let broker = Broker::start_default().await;
        let (cf1, cf2, ks2) = (
            broker.client("cf1"),
            broker.client("cf2"),
            broker.client("ks2"),
        );
        for round in 0..4 {
            let owner = format!("race-owner-{round}");
            cf1.put(
                &instance_path(&owner),
                &cf_body(SMALL, "o", "s", "db", None),
            )
            .await
            .expect(201);
            let token = token_of(&cf1, &owner).await.expect("token");
            let (a, b) = (format!("race-a-{round}"), format!("race-b-{round}"));
            let body = json!({"sharing_token": token});
            let (pa, pb, pd) = (
                instance_path(&a),
                instance_path(&b),
                deprovision_path(&owner, SMALL, false),
            );
            let (ba, bb) = (
                cf_body(SMALL, "x", "y", "z", Some(body.clone())),
                k8s_body(SMALL, "ns", Some(body)),
            );
            let (ra, rb, rd) = tokio::join!(cf2.put(&pa, &ba), ks2.put(&pb, &bb), cf1.delete(&pd));
            for r in [&ra, &rb] {
                assert!(
                    matches!(r.status, 201 | 400 | 422),
                    "lease: {} {}",
                    r.status,
                    r.text
                );
            }
            assert!(
                matches!(rd.status, 200 | 422),
                "delete: {} {}",
                rd.status,
                rd.text
            );
            let owner_alive = cf1.get(&instance_path(&owner)).await;
            let exists_a = cf2.get(&instance_path(&a)).await.status == 200;
            let exists_b = ks2.get(&instance_path(&b)).await.status == 200;
            if owner_alive.status == 200 {
                // Every lease listed by the owner exists, and every lease that exists is listed.
                let listed: Vec<String> = owner_alive.json["parameters"]["x_osb_cmdb"]["leases"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|l| l["instance_guid"].as_str().map(str::to_owned))
                    .collect();
                assert_eq!(
                    listed.contains(&a),
                    exists_a,
                    "round {round}: {}",
                    owner_alive.text
                );
                assert_eq!(
                    listed.contains(&b),
                    exists_b,
                    "round {round}: {}",
                    owner_alive.text
                );
                assert_eq!(rd.status, 422, "a delete that lost to a lease is refused");
            } else {
                // The owner is gone: no lease of it exists.
                assert_eq!(rd.status, 200);
                assert!(
                    !exists_a && !exists_b,
                    "round {round}: a lease of a deleted owner"
                );
            }
        }
    })
    .await;
}
