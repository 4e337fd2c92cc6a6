//! GET instance on sharing: a lease's description, and the owner's view (its `sharing_to`, leases, token
//! and purge flag) under `parameters.x_osb_cmdb`.

use crate::broker::Broker;
use crate::error::Result;
use crate::keys;
use crate::model::Object;
use crate::ports::{Record, rfc3339_ms};
use crate::records::Instance;
use crate::sharing::Lease;
use crate::sharing::params;
use serde_json::{Value, json};

impl Broker {
    /// GET instance of a lease or an owner: the description of a lease, and the owner's sharing view
    /// under `parameters.x_osb_cmdb` (only the owner's own tenant ever reads its record).
    pub(in crate::broker) async fn sharing_view(
        &self,
        cur: &Instance,
    ) -> Result<(Option<Object>, Option<String>)> {
        if let Some(lease) = &cur.lease {
            return Ok((cur.parameters.clone(), Some(lease.description())));
        }
        let Some(sharing) = &cur.sharing else {
            return Ok((cur.parameters.clone(), None));
        };
        let mut leases = Vec::new();
        if !sharing.leases.is_empty() {
            let wanted: Vec<_> = sharing
                .leases
                .iter()
                .map(|l| keys::lease_key(&cur.tenant, &cur.id, l))
                .collect();
            let mut items: Vec<Lease> = self
                .store
                .get_records(&wanted)
                .await?
                .into_iter()
                .filter_map(|r| match r.item {
                    Record::Lease(l) if l.active => Some(l),
                    _ => None,
                })
                .collect();
            items.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            for l in items {
                leases.push(json!({
                    "tenant": l.tenant,
                    "profile": l.profile,
                    "org_name": l.org_name,
                    "org_guid": l.org_guid,
                    "space_name": l.space_name,
                    "space_guid": l.space_guid,
                    "namespace": l.namespace,
                    "instance_name": l.instance_name,
                    "instance_guid": l.id,
                    "created_at": rfc3339_ms(l.created_at),
                }));
            }
        }
        let mut view = serde_json::Map::new();
        view.insert("sharing_to".into(), json!(sharing.sharing_to));
        view.insert("leases".into(), Value::Array(leases));
        if let Some(t) = &sharing.token {
            view.insert(
                "sharing_token".into(),
                match self.sharing.token(&cur.tenant, cur.id.as_str(), t) {
                    Some(token) => json!({
                        "token": token,
                        "expiration_date": rfc3339_ms(t.expires_at),
                    }),
                    // The key it was made with is no longer configured: it still works until it expires
                    // for whoever holds it, but cannot be shown again.
                    None => json!({
                        "token": null,
                        "expiration_date": rfc3339_ms(t.expires_at),
                        "description": "this token can no longer be shown (the key it was made with was rotated out): regenerate it with parameters x_osb_cmdb.sharing_token = \"regenerate\"",
                    }),
                },
            );
        }
        view.insert(
            "purge_leases_on_delete".into(),
            json!(sharing.purge_leases_on_delete),
        );
        let mut params = cur.parameters.clone().unwrap_or_default();
        params.insert(params::KEY.into(), Value::Object(view));
        Ok((Some(params), None))
    }
}
