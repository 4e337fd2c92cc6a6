//! The store contract: what every `Store` adapter must do. Cases panic on violation (they are tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::ids::{BindingId, InstanceId, OperationId};
use crate::ports::{Bindings, InstanceWithBindings, Record, Store, StoreError, Write};
use crate::records::*;
use std::sync::Arc;

fn iid(s: &str) -> InstanceId {
    InstanceId::parse(s).unwrap()
}

pub fn instance(tenant: &str, id: &str) -> Instance {
    Instance {
        tenant: tenant.into(),
        id: iid(id),
        generation: 1,
        service_id: "svc".into(),
        plan_id: "plan".into(),
        organization_guid: Some("org".into()),
        space_guid: Some("space".into()),
        context: None,
        parameters: Some(serde_json::from_str(r#"{"a": 1}"#).unwrap()),
        maintenance_info: None,
        dashboard_url: None,
        metadata: None,
        state: InstanceState::Ready,
        last_operation: None,
        provisioned_at: Some(1),
        created_at: 1,
        updated_at: 1,
        sharing: None,
        lease: None,
    }
}

pub fn binding(tenant: &str, instance_id: &str, id: &str) -> Binding {
    Binding {
        tenant: tenant.into(),
        instance_id: iid(instance_id),
        instance_generation: 1,
        id: BindingId::parse(id).unwrap(),
        generation: 1,
        service_id: "svc".into(),
        plan_id: "plan".into(),
        app_guid: None,
        bind_resource: None,
        context: None,
        parameters: None,
        predecessor_binding_id: None,
        state: BindingState::Ready,
        result: None,
        last_operation: None,
        created_at: 1,
        updated_at: 1,
    }
}

pub fn operation(tenant: &str, instance_id: &str, id: &str) -> Operation {
    let job = crate::ports::BackendJob {
        kind: OperationKind::Provision,
        operation_id: OperationId::parse(id).unwrap(),
        tenant: tenant.into(),
        instance_id: iid(instance_id),
        generation: 1,
        binding_id: None,
        binding_generation: 0,
        lease: None,
        service_id: "svc".into(),
        plan_id: "plan".into(),
        parameters: None,
        started_at: 1,
        context: None,
        originating_identity: None,
        accepts_incomplete: false,
        bind_resource: None,
        organization_guid: None,
        space_guid: None,
    };
    Operation::start(&job, true, &RequestMeta::default())
}

/// Every key of an index listing, page after page (`page` keys at most each), sorted by operation id.
pub async fn list_all(
    store: &Arc<dyn Store>,
    callbacks: bool,
    page: usize,
) -> Vec<crate::records::OperationKey> {
    let (mut all, mut from) = (Vec::new(), None);
    for _ in 0..10_000 {
        let got = if callbacks {
            store.pending_callbacks(from.as_ref(), page).await
        } else {
            store.unfinished_operations(from.as_ref(), page).await
        }
        .unwrap();
        assert!(got.keys.len() <= page, "a page holds at most its limit");
        all.extend(got.keys);
        match got.next {
            Some(next) => from = Some(next),
            None => {
                all.sort_by(|a, b| a.operation_id.cmp(&b.operation_id));
                return all;
            }
        }
    }
    panic!("the listing never ended");
}

async fn unfinished(store: &Arc<dyn Store>) -> Vec<crate::records::OperationKey> {
    list_all(store, false, crate::ports::MAX_PAGE).await
}

async fn pending(store: &Arc<dyn Store>) -> Vec<crate::records::OperationKey> {
    list_all(store, true, crate::ports::MAX_PAGE).await
}

pub async fn created_records_read_back_at_version_one(store: Arc<dyn Store>) {
    assert_eq!(store.get_instance("t1", &iid("i1")).await.unwrap(), None);
    let i = instance("t1", "i1");
    let b = binding("t1", "i1", "b1");
    let o = operation("t1", "i1", "op1");
    store
        .commit(vec![
            Write::create(Record::Instance(i.clone())),
            Write::create(Record::Binding(b.clone())),
            Write::create(Record::Operation(o.clone())),
        ])
        .await
        .unwrap();
    let got = store.get_instance("t1", &iid("i1")).await.unwrap().unwrap();
    assert_eq!((got.item, got.version), (i, 1));
    let got = store
        .get_binding("t1", &iid("i1"), &b.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((got.item, got.version), (b, 1));
    let got = store.get_operation(&o.key()).await.unwrap().unwrap();
    assert_eq!((got.item, got.version), (o, 1));
}

pub async fn expectations_guard_every_write(store: Arc<dyn Store>) {
    let mut i = instance("t1", "i1");
    store
        .commit(vec![Write::create(Record::Instance(i.clone()))])
        .await
        .unwrap();
    assert_eq!(
        store
            .commit(vec![Write::create(Record::Instance(i.clone()))])
            .await,
        Err(StoreError::Conflict),
        "create of an existing record"
    );
    i.plan_id = "other".into();
    assert_eq!(
        store
            .commit(vec![Write::replace(Record::Instance(i.clone()), 7)])
            .await,
        Err(StoreError::Conflict),
        "replace at a wrong version"
    );
    store
        .commit(vec![Write::replace(Record::Instance(i.clone()), 1)])
        .await
        .unwrap();
    let got = store.get_instance("t1", &iid("i1")).await.unwrap().unwrap();
    assert_eq!((got.item.plan_id.as_str(), got.version), ("other", 2));
    assert_eq!(
        store
            .commit(vec![Write::replace(Record::Instance(i.clone()), 1)])
            .await,
        Err(StoreError::Conflict),
        "replace at a stale version"
    );
    let missing = instance("t1", "nope");
    assert_eq!(
        store
            .commit(vec![Write::replace(Record::Instance(missing), 1)])
            .await,
        Err(StoreError::Conflict),
        "replace of a missing record"
    );
}

pub async fn a_failed_batch_writes_nothing(store: Arc<dyn Store>) {
    let i = instance("t1", "i1");
    store
        .commit(vec![Write::create(Record::Instance(i.clone()))])
        .await
        .unwrap();
    let o = operation("t1", "i1", "op1");
    let mut changed = i.clone();
    changed.state = InstanceState::Deleting;
    let r = store
        .commit(vec![
            Write::create(Record::Operation(o.clone())),
            Write::replace(Record::Instance(changed), 5),
        ])
        .await;
    assert_eq!(r, Err(StoreError::Conflict));
    assert_eq!(store.get_operation(&o.key()).await.unwrap(), None);
    let got = store.get_instance("t1", &iid("i1")).await.unwrap().unwrap();
    assert_eq!((got.item, got.version), (i, 1));
}

pub async fn bindings_are_listed_per_instance_only(store: Arc<dyn Store>) {
    store
        .commit(vec![
            Write::create(Record::Instance(instance("t1", "i1"))),
            Write::create(Record::Binding(binding("t1", "i1", "b2"))),
            Write::create(Record::Binding(binding("t1", "i1", "b1"))),
            Write::create(Record::Binding(binding("t1", "i10", "b3"))),
            Write::create(Record::Binding(binding("t2", "i1", "b4"))),
            Write::create(Record::Operation(operation("t1", "i1", "op1"))),
        ])
        .await
        .unwrap();
    let ids = |r: &InstanceWithBindings| {
        let mut ids: Vec<String> = r.bindings.iter().map(|b| b.item.id.to_string()).collect();
        ids.sort();
        ids
    };
    let all = store
        .get_instance_with_bindings("t1", &iid("i1"), Bindings::All)
        .await
        .unwrap();
    assert_eq!(all.instance.as_ref().map(|i| i.version), Some(1));
    assert_eq!(ids(&all), vec!["b1", "b2"]);
    assert!(all.bindings.iter().all(|b| b.version == 1));

    let wanted = [
        BindingId::parse("b2").unwrap(),
        BindingId::parse("missing").unwrap(),
    ];
    let some = store
        .get_instance_with_bindings("t1", &iid("i1"), Bindings::Ids(&wanted))
        .await
        .unwrap();
    assert_eq!(
        some.instance.as_ref().map(|i| &i.item),
        Some(&instance("t1", "i1"))
    );
    assert_eq!(ids(&some), vec!["b2"]);
    assert!(some.binding(&wanted[0]).is_some() && some.binding(&wanted[1]).is_none());

    // Bindings without an instance record are still read; an absent instance is None.
    let orphans = store
        .get_instance_with_bindings("t1", &iid("i10"), Bindings::All)
        .await
        .unwrap();
    assert_eq!(ids(&orphans), vec!["b3"]);
    assert_eq!(orphans.instance, None);
    let none = store
        .get_instance_with_bindings("t1", &iid("i2"), Bindings::Ids(&wanted))
        .await
        .unwrap();
    assert_eq!(none, InstanceWithBindings::default());
}

pub async fn tenants_do_not_share_ids(store: Arc<dyn Store>) {
    let mut a = instance("t1", "same");
    a.plan_id = "a".into();
    let mut b = instance("t2", "same");
    b.plan_id = "b".into();
    store
        .commit(vec![Write::create(Record::Instance(a))])
        .await
        .unwrap();
    store
        .commit(vec![Write::create(Record::Instance(b))])
        .await
        .unwrap();
    let ga = store
        .get_instance("t1", &iid("same"))
        .await
        .unwrap()
        .unwrap();
    let gb = store
        .get_instance("t2", &iid("same"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (ga.item.plan_id.as_str(), gb.item.plan_id.as_str()),
        ("a", "b")
    );
    assert_eq!(store.get_instance("t3", &iid("same")).await.unwrap(), None);
}

pub async fn unfinished_operations_are_listed_until_final(store: Arc<dyn Store>) {
    let o1 = operation("t1", "i1", "op1");
    let o2 = operation("t2", "i2", "op2");
    store
        .commit(vec![
            Write::create(Record::Operation(o1.clone())),
            Write::create(Record::Operation(o2.clone())),
        ])
        .await
        .unwrap();
    assert_eq!(unfinished(&store).await, vec![o1.key(), o2.key()]);
    let mut done = o1.clone();
    done.finish(OperationState::Succeeded, None, 2);
    store
        .commit(vec![Write::replace(Record::Operation(done), 1)])
        .await
        .unwrap();
    assert_eq!(unfinished(&store).await, vec![o2.key()]);
}

pub async fn concurrent_writers_of_one_version_have_one_winner(store: Arc<dyn Store>) {
    store
        .commit(vec![Write::create(Record::Instance(instance("t1", "i1")))])
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for n in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = instance("t1", "i1");
            i.plan_id = format!("p{n}");
            store
                .commit(vec![Write::replace(Record::Instance(i), 1)])
                .await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => wins += 1,
            Err(e) => assert_eq!(e, StoreError::Conflict),
        }
    }
    assert_eq!(wins, 1);
    let got = store.get_instance("t1", &iid("i1")).await.unwrap().unwrap();
    assert_eq!(got.version, 2);
}

pub fn callback(tenant: &str, instance_id: &str, op: &str) -> Callback {
    Callback {
        tenant: tenant.into(),
        instance_id: iid(instance_id),
        binding_id: None,
        operation_id: OperationId::parse(op).unwrap(),
        kind: OperationKind::Provision,
        url: "https://receiver.example/hook?token=t".into(),
        secret: Some("0123456789abcdef0123456789abcdef".into()),
        body: Some(r#"{"dashboard_url":"https://dash.example/i/1"}"#.into()),
        status: 201,
        outcome: OperationState::Succeeded,
        completed_at: 5,
        api_version: Some("2.17".into()),
        request_identity: None,
        state: CallbackState::Pending,
        next_attempt_at: 5,
        lease_until: None,
        attempts: Vec::new(),
        created_at: 5,
        updated_at: 5,
    }
}

/// Callbacks sit beside their operation (same partition, own key), round-trip exactly (the body's
/// bytes included), and are listed as pending until their delivery is final.
pub async fn callbacks_round_trip_and_are_pending_until_final(store: Arc<dyn Store>) {
    let o = operation("t1", "i1", "op1");
    let c1 = callback("t1", "i1", "op1");
    let c2 = callback("t2", "i2", "op2");
    assert_eq!(store.get_callback(&o.key()).await.unwrap(), None);
    store
        .commit(vec![
            Write::create(Record::Operation(o.clone())),
            Write::create(Record::Callback(c1.clone())),
            Write::create(Record::Callback(c2.clone())),
        ])
        .await
        .unwrap();
    let got = store.get_callback(&o.key()).await.unwrap().unwrap();
    assert_eq!((got.item.clone(), got.version), (c1.clone(), 1));
    // The operation is still read as an operation, and the operations index lists only operations.
    assert_eq!(
        store.get_operation(&o.key()).await.unwrap().unwrap().item,
        o
    );
    assert_eq!(unfinished(&store).await, vec![o.key()]);
    assert_eq!(pending(&store).await, vec![c1.key(), c2.key()]);
    // Creating it twice conflicts (a duplicate finalize cannot make a second callback).
    assert_eq!(
        store
            .commit(vec![Write::create(Record::Callback(c1.clone()))])
            .await,
        Err(StoreError::Conflict)
    );
    let mut delivered = c1.clone();
    delivered.state = CallbackState::Delivered;
    delivered.secret = None;
    delivered.body = None;
    store
        .commit(vec![Write::replace(Record::Callback(delivered.clone()), 1)])
        .await
        .unwrap();
    assert_eq!(pending(&store).await, vec![c2.key()]);
    let got = store.get_callback(&o.key()).await.unwrap().unwrap();
    assert_eq!((got.item, got.version), (delivered, 2));
}

/// The index listings come a bounded page at a time and, page after page, list every key once: more
/// keys than one page (over every DynamoDB shard), pages of 1, 2 and 3, keys finished between two pages
/// left out, keys rewritten (touched) between two pages listed once, the other family never mixed in.
pub async fn index_listings_page_through_more_keys_than_one_page(store: Arc<dyn Store>) {
    let ids: Vec<String> = (0..11).map(|n| format!("op{n:02}")).collect();
    let mut writes = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let tenant = format!("t{}", n % 3);
        writes.push(Write::create(Record::Operation(operation(
            &tenant, "i1", id,
        ))));
        writes.push(Write::create(Record::Callback(callback(&tenant, "i1", id))));
    }
    for chunk in writes.chunks(10) {
        store.commit(chunk.to_vec()).await.unwrap();
    }
    let mut want: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| operation(&format!("t{}", n % 3), "i1", id).key())
        .collect();
    want.sort_by(|a, b| a.operation_id.cmp(&b.operation_id));
    for page in [1, 2, 3] {
        assert_eq!(
            list_all(&store, false, page).await,
            want,
            "operations, pages of {page}"
        );
        assert_eq!(
            list_all(&store, true, page).await,
            want,
            "callbacks, pages of {page}"
        );
    }
    let first = store.unfinished_operations(None, 4).await.unwrap();
    assert_eq!(first.keys.len(), 4, "a full first page");
    assert!(first.next.is_some(), "more follow");
    assert_eq!(
        store
            .unfinished_operations(None, 0)
            .await
            .unwrap()
            .keys
            .len(),
        1,
        "a limit of 0 reads as 1"
    );

    // Between two pages: every key of the first page is touched and every other key not yet listed
    // is finished. The rest of the listing has none of them twice, and none of the finished ones.
    let mut seen = first.keys.clone();
    for key in &want {
        let current = store.get_operation(key).await.unwrap().unwrap();
        let mut op = current.item.clone();
        if first.keys.contains(key) {
            op.updated_at += 1;
        } else if key.operation_id.as_str() > "op05" {
            op.finish(OperationState::Succeeded, None, 2);
        } else {
            continue;
        }
        store
            .commit(vec![Write::replace(Record::Operation(op), current.version)])
            .await
            .unwrap();
    }
    let mut from = first.next;
    while let Some(cursor) = from {
        let page = store.unfinished_operations(Some(&cursor), 4).await.unwrap();
        seen.extend(page.keys);
        from = page.next;
    }
    seen.sort_by(|a, b| a.operation_id.cmp(&b.operation_id));
    let expected: Vec<_> = want
        .iter()
        .filter(|k| first.keys.contains(k) || k.operation_id.as_str() <= "op05")
        .cloned()
        .collect();
    assert_eq!(seen, expected);
    assert_eq!(
        list_all(&store, true, 2).await,
        want,
        "callbacks unaffected"
    );
}

// --- sharing ---

fn lease(owner: &str, tenant: &str, id: &str) -> crate::sharing::Lease {
    crate::sharing::Lease {
        owner_tenant: "t1".into(),
        owner_id: iid(owner),
        tenant: tenant.into(),
        id: iid(id),
        profile: Some("kubernetes".into()),
        org_name: None,
        org_guid: None,
        space_name: None,
        space_guid: None,
        namespace: Some("ns".into()),
        instance_name: None,
        created_at: 1,
        active: true,
        updated_at: 1,
    }
}

pub async fn sharing_records_are_read_by_key_in_one_batch(store: Arc<dyn Store>) {
    use crate::keys;
    use crate::sharing::{LeaseRef, ShareRules, SharingTokenRecord};
    let owner = instance("t1", "owner");
    let l = lease("owner", "t2", "l1");
    let rules = ShareRules {
        service_id: "svc".into(),
        tenant: "t2".into(),
        owners: vec![crate::sharing::RuleOwner {
            owner_tenant: "t1".into(),
            owner_id: iid("owner"),
            owner_generation: 1,
            plan_id: "plan".into(),
            sets: vec![serde_json::from_str(r#"{"tenant": "t2", "namespace": "ns"}"#).unwrap()],
        }],
        updated_at: 1,
    };
    let token = SharingTokenRecord {
        hash: "ab".repeat(32),
        owner_tenant: "t1".into(),
        owner_id: iid("owner"),
        expires_at: 9_999_999_999_999,
    };
    store
        .commit(vec![
            Write::create(Record::Instance(owner.clone())),
            Write::create(Record::Lease(l.clone())),
            Write::create(Record::ShareRules(rules.clone())),
            Write::create(Record::SharingToken(token.clone())),
        ])
        .await
        .unwrap();
    let lref = LeaseRef {
        tenant: "t2".into(),
        id: iid("l1"),
    };
    let missing = LeaseRef {
        tenant: "t2".into(),
        id: iid("nope"),
    };
    let mut got = store
        .get_records(&[
            keys::instance_key("t1", &iid("owner")),
            keys::lease_key("t1", &iid("owner"), &lref),
            keys::lease_key("t1", &iid("owner"), &missing),
            keys::share_rules_key("svc", "t2"),
            keys::share_rules_key("svc", "t3"),
            keys::sharing_token_key(&token.hash),
        ])
        .await
        .unwrap();
    assert_eq!(got.len(), 4, "absent keys are left out");
    assert!(got.iter().all(|r| r.version == 1));
    let mut found = (false, false, false, false);
    for r in got.drain(..) {
        match r.item {
            Record::Instance(i) => found.0 = i == owner,
            Record::Lease(x) => found.1 = x == l,
            Record::ShareRules(x) => found.2 = x == rules,
            Record::SharingToken(x) => found.3 = x == token,
            other => panic!("unexpected record {other:?}"),
        }
    }
    assert_eq!(found, (true, true, true, true));
    // Lease entries never show up as bindings of the owner.
    let with = store
        .get_instance_with_bindings("t1", &iid("owner"), Bindings::All)
        .await
        .unwrap();
    assert!(with.bindings.is_empty());
    // Versions guard them like every record.
    let mut inactive = l.clone();
    inactive.active = false;
    assert_eq!(
        store
            .commit(vec![Write::replace(Record::Lease(inactive.clone()), 2)])
            .await,
        Err(StoreError::Conflict)
    );
    store
        .commit(vec![Write::replace(Record::Lease(inactive), 1)])
        .await
        .unwrap();
    assert_eq!(store.get_records(&[]).await.unwrap(), vec![]);
}

/// A lease creation (owner + lease entry + lease instance) racing an owner delete: exactly one commits,
/// and the loser writes nothing.
pub async fn a_lease_and_an_owner_delete_racing_have_one_winner(store: Arc<dyn Store>) {
    store
        .commit(vec![Write::create(Record::Instance(instance(
            "t1", "owner",
        )))])
        .await
        .unwrap();
    let lease_commit = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut owner = instance("t1", "owner");
            owner.updated_at = 2;
            let mut leased = instance("t2", "l1");
            leased.lease = Some(crate::sharing::LeaseOf {
                owner_tenant: "t1".into(),
                owner_id: iid("owner"),
                owner_generation: 1,
                orphaned: false,
            });
            store
                .commit(vec![
                    Write::replace(Record::Instance(owner), 1),
                    Write::create(Record::Lease(lease("owner", "t2", "l1"))),
                    Write::create(Record::Instance(leased)),
                ])
                .await
        })
    };
    let delete_commit = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut owner = instance("t1", "owner");
            owner.state = InstanceState::Gone;
            store
                .commit(vec![
                    Write::replace(Record::Instance(owner), 1),
                    Write::create(Record::Operation(operation("t1", "owner", "op1"))),
                ])
                .await
        })
    };
    let (a, b) = (lease_commit.await.unwrap(), delete_commit.await.unwrap());
    assert!(a.is_ok() != b.is_ok(), "exactly one wins: {a:?} {b:?}");
    let owner = store
        .get_instance("t1", &iid("owner"))
        .await
        .unwrap()
        .unwrap();
    let leased = store.get_instance("t2", &iid("l1")).await.unwrap();
    let entry = store
        .get_records(&[crate::keys::lease_key(
            "t1",
            &iid("owner"),
            &crate::sharing::LeaseRef {
                tenant: "t2".into(),
                id: iid("l1"),
            },
        )])
        .await
        .unwrap();
    if a.is_ok() {
        assert_eq!(owner.item.state, InstanceState::Ready);
        assert!(leased.is_some() && entry.len() == 1);
    } else {
        assert_eq!(owner.item.state, InstanceState::Gone);
        assert!(leased.is_none() && entry.is_empty(), "no half lease");
    }
}

/// Every record of one inventory listing, page after page of `page` records.
async fn inventory_all(
    store: &Arc<dyn Store>,
    tenant: &str,
    kind: crate::ports::InventoryKind,
    window: (Option<i64>, Option<i64>),
    page: usize,
) -> Vec<Record> {
    let mut query = crate::ports::InventoryQuery {
        tenant: tenant.into(),
        kind,
        updated_since: window.0,
        updated_before: window.1,
        after: None,
        limit: page,
    };
    let mut out = Vec::new();
    for _ in 0..100 {
        let got = store.inventory(&query).await.unwrap();
        assert!(got.records.len() <= page, "a page holds at most its limit");
        out.extend(got.records.into_iter().map(|v| v.item));
        match got.next {
            // A client hands the cursor back as text.
            Some(next) => {
                query.after = Some(crate::ports::InventoryCursor::parse(next.as_str()).unwrap())
            }
            None => return out,
        }
    }
    panic!("the listing never ends");
}

pub async fn the_inventory_lists_a_tenants_records_of_one_kind_newest_first(store: Arc<dyn Store>) {
    use crate::ports::InventoryKind::*;
    let at = |mut i: Instance, t: i64| {
        i.updated_at = t;
        i
    };
    let mut bound = binding("t1", "a", "b1");
    bound.updated_at = 50;
    store
        .commit(vec![
            Write::create(Record::Instance(at(instance("t1", "a"), 100))),
            Write::create(Record::Instance(at(instance("t1", "b"), 300))),
            Write::create(Record::Instance(at(instance("t1", "c"), 200))),
            Write::create(Record::Instance(at(instance("t2", "a"), 250))),
            Write::create(Record::Binding(bound.clone())),
            Write::create(Record::Operation(operation("t1", "a", "op1"))),
            Write::create(Record::Lease(lease("a", "t2", "l1"))),
        ])
        .await
        .unwrap();
    // A record written again moves to its new update time.
    store
        .commit(vec![Write::replace(
            Record::Instance(at(instance("t1", "b"), 400)),
            1,
        )])
        .await
        .unwrap();
    let ids = |records: Vec<Record>| -> Vec<String> {
        records
            .into_iter()
            .map(|r| match r {
                Record::Instance(i) => format!("{}/{}@{}", i.tenant, i.id.as_str(), i.updated_at),
                other => panic!("not an instance: {other:?}"),
            })
            .collect()
    };
    let all = vec!["t1/b@400", "t1/c@200", "t1/a@100"];
    for page in [1, 2, 1000] {
        assert_eq!(
            ids(inventory_all(&store, "t1", Instances, (None, None), page).await),
            all,
            "pages of {page}"
        );
    }
    // A window of update times: since is inclusive, before exclusive.
    assert_eq!(
        ids(inventory_all(&store, "t1", Instances, (Some(200), Some(400)), 1).await),
        vec!["t1/c@200"]
    );
    assert_eq!(
        ids(inventory_all(&store, "t1", Instances, (Some(101), None), 1000).await),
        vec!["t1/b@400", "t1/c@200"]
    );
    assert_eq!(
        ids(inventory_all(&store, "t2", Instances, (None, None), 1000).await),
        vec!["t2/a@250"]
    );
    assert!(
        inventory_all(&store, "t3", Instances, (None, None), 1000)
            .await
            .is_empty()
    );
    // Other kinds, each in its own listing.
    assert_eq!(
        inventory_all(&store, "t1", Bindings, (None, None), 1000).await,
        vec![Record::Binding(bound)]
    );
    assert_eq!(
        inventory_all(&store, "t1", Operations, (None, None), 1000).await,
        vec![Record::Operation(operation("t1", "a", "op1"))]
    );
    assert_eq!(
        inventory_all(&store, "t1", LeaseEntries, (None, None), 1000).await,
        vec![Record::Lease(lease("a", "t2", "l1"))]
    );
    assert!(
        inventory_all(&store, "t1", Callbacks, (None, None), 1000)
            .await
            .is_empty()
    );
    assert!(
        inventory_all(&store, "t2", Bindings, (None, None), 1000)
            .await
            .is_empty()
    );
    // A cursor that is not one is refused before it reaches a store.
    assert!(crate::ports::InventoryCursor::parse("T#t1#I#a").is_none());
    assert!(crate::ports::InventoryCursor::parse("12#T#t1").is_none());
}
