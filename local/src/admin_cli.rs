//! `osb-broker admin …`: a client of the admin API, with a table for people and `--json` for scripts.
//!
//! ```text
//! osb-broker admin [--config FILE] [--url URL] [--user NAME] [--json] tenants
//! osb-broker admin … list TENANT instances|bindings|operations|callbacks|leases|leases_held
//!                   [--state S[,S…]] [--since T] [--before T] [--limit N] [--all]
//! osb-broker admin … redrive-operation TENANT INSTANCE OPERATION
//! osb-broker admin … redrive-callback TENANT INSTANCE OPERATION
//! ```
//!
//! Where and who: the `[admin]` section of `--config` (or the defaults: `127.0.0.1:8081`, `admin`, the
//! password kept in the data directory); `--url`, `--user` and `OSB_ADMIN_PASSWORD` override them.

use anyhow::{Context, bail};
use osb_broker::config::BrokerConfig;
use serde_json::Value;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

const USAGE: &str = "usage: osb-broker admin [--config FILE] [--url URL] [--user NAME] [--json] COMMAND
commands:
  tenants
  list TENANT instances|bindings|operations|callbacks|leases|leases_held
       [--state S[,S...]] [--since TIME] [--before TIME] [--limit N] [--all]
  redrive-operation TENANT INSTANCE OPERATION
  redrive-callback TENANT INSTANCE OPERATION
the password: OSB_ADMIN_PASSWORD, else the [admin] password of the configuration (or the one kept in its data directory)";

/// Columns of the table of each listing: header and the JSON field shown.
fn columns(listing: &str) -> &'static [(&'static str, &'static str)] {
    match listing {
        "bindings" => &[
            ("INSTANCE", "instance_id"),
            ("BINDING", "binding_id"),
            ("STATE", "state"),
            ("PLAN", "plan_id"),
            ("UPDATED", "updated_at"),
        ],
        "operations" => &[
            ("INSTANCE", "instance_id"),
            ("OPERATION", "operation_id"),
            ("KIND", "kind"),
            ("STATE", "state"),
            ("UPDATED", "updated_at"),
            ("DESCRIPTION", "description"),
        ],
        "callbacks" => &[
            ("INSTANCE", "instance_id"),
            ("OPERATION", "operation_id"),
            ("STATE", "state"),
            ("ATTEMPTS", "attempts"),
            ("DESTINATION", "destination"),
            ("UPDATED", "updated_at"),
        ],
        "leases" | "leases_given" => &[
            ("OWNER INSTANCE", "owner_instance_id"),
            ("LEASED BY", "tenant"),
            ("AS INSTANCE", "instance_id"),
            ("STATE", "state"),
            ("UPDATED", "updated_at"),
        ],
        "tenants" => &[
            ("NAME", "name"),
            ("PROFILE", "profile"),
            ("SERVICES", "services"),
            ("ACCEPTS LEASES FROM", "accept_leases_from"),
        ],
        // instances, leases_held
        _ => &[
            ("INSTANCE", "instance_id"),
            ("STATE", "state"),
            ("PLAN", "plan_id"),
            ("UPDATED", "updated_at"),
            ("LAST OPERATION", "last_operation"),
            ("LEASE OF", "lease_of"),
        ],
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::Array(a) if a.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.iter().all(|x| x.is_string()) => a
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        // Attempts: how many, and the last outcome.
        Value::Array(a) => match a.last() {
            Some(last) => format!(
                "{} (last: {}{})",
                a.len(),
                last["outcome"].as_str().unwrap_or("?"),
                last["status"]
                    .as_u64()
                    .map(|s| format!(" {s}"))
                    .unwrap_or_default()
            ),
            None => "-".into(),
        },
        Value::Object(o) => match (o.get("owner_tenant"), o.get("owner_instance_id")) {
            (Some(t), Some(i)) => format!("{}/{}", cell(t), cell(i)),
            _ => v.to_string(),
        },
        other => other.to_string(),
    }
}

/// The rows as a table with aligned columns.
pub fn table(listing: &str, items: &[Value]) -> String {
    let cols = columns(listing);
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| cols.iter().map(|(_, f)| cell(&i[*f])).collect())
        .collect();
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(n, (h, _))| {
            rows.iter()
                .map(|r| r[n].chars().count())
                .chain([h.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let mut l = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        l.truncate(l.trim_end().len());
        l
    };
    let mut out = line(cols.iter().map(|(h, _)| (*h).to_owned()).collect());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}

struct Cli {
    url: String,
    user: String,
    password: String,
    json: bool,
    http: reqwest::Client,
}

impl Cli {
    async fn call(&self, method: reqwest::Method, path_and_query: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path_and_query}", self.url.trim_end_matches('/'));
        let resp = self
            .http
            .request(method, &url)
            .basic_auth(&self.user, Some(&self.password))
            .send()
            .await
            .with_context(|| format!("cannot reach the admin API at {}", self.url))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let why = body["description"].as_str().unwrap_or("no description");
            bail!("the admin API answered {status}: {why}");
        }
        Ok(body)
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b',' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs `osb-broker admin` with the arguments after `admin`.
pub async fn run(args: Vec<String>) -> anyhow::Result<()> {
    let (mut config, mut url, mut user, mut json, mut all) = (None, None, None, false, false);
    let mut query: Vec<(String, String)> = Vec::new();
    let mut positional = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--config" | "-c" => config = Some(PathBuf::from(value("--config")?)),
            "--url" => url = Some(value("--url")?),
            "--user" => user = Some(value("--user")?),
            "--json" => json = true,
            "--all" => all = true,
            "--state" | "--since" | "--before" | "--limit" => {
                query.push((a.trim_start_matches("--").to_owned(), value(&a)?))
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            other if other.starts_with('-') => bail!("unknown option '{other}'\n{USAGE}"),
            _ => positional.push(a),
        }
    }
    let cfg = match &config {
        Some(p) => BrokerConfig::load(p)?,
        None => BrokerConfig::default(),
    };
    let password = match std::env::var("OSB_ADMIN_PASSWORD") {
        Ok(p) if !p.is_empty() => p,
        _ => match cfg.admin_credentials()? {
            Some((_, p, _)) => p.expose().to_owned(),
            None => bail!("[admin] enabled = false: there is no admin API"),
        },
    };
    let cli = Cli {
        url: url.unwrap_or_else(|| format!("http://{}", cfg.admin.listen)),
        user: user.unwrap_or_else(|| cfg.admin.username.clone()),
        password,
        json,
        http: reqwest::Client::new(),
    };
    let words: Vec<&str> = positional.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["tenants"] => {
            let body = cli.call(reqwest::Method::GET, "/admin/v1/tenants").await?;
            let items = body["tenants"].as_array().cloned().unwrap_or_default();
            print_items(&cli, "tenants", &items);
        }
        ["list", tenant, listing] => list(&cli, tenant, listing, &query, all).await?,
        [
            verb @ ("redrive-operation" | "redrive-callback"),
            tenant,
            instance,
            operation,
        ] => {
            let what = if *verb == "redrive-operation" {
                "operations"
            } else {
                "callbacks"
            };
            let body = cli
                .call(
                    reqwest::Method::POST,
                    &format!(
                        "/admin/v1/tenants/{}/instances/{}/{what}/{}/redrive",
                        enc(tenant),
                        enc(instance),
                        enc(operation)
                    ),
                )
                .await?;
            if cli.json {
                println!("{body}");
            } else {
                println!("re-driven: {}", cell(&body["redriven"]));
            }
        }
        _ => bail!("{USAGE}"),
    }
    Ok(())
}

fn print_items(cli: &Cli, listing: &str, items: &[Value]) {
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "items": items }))
                .unwrap_or_default()
        );
    } else {
        print!("{}", table(listing, items));
    }
}

/// One page, or with `all` every page (a progress line on stderr when it is a terminal).
async fn list(
    cli: &Cli,
    tenant: &str,
    listing: &str,
    query: &[(String, String)],
    all: bool,
) -> anyhow::Result<()> {
    let base: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect();
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let progress = all && std::io::stderr().is_terminal();
    loop {
        let mut q = base.clone();
        if let Some(c) = &cursor {
            q.push(format!("cursor={}", enc(c)));
        }
        let path = format!(
            "/admin/v1/tenants/{}/{}{}{}",
            enc(tenant),
            enc(listing),
            if q.is_empty() { "" } else { "?" },
            q.join("&")
        );
        let page = cli.call(reqwest::Method::GET, &path).await?;
        items.extend(page["items"].as_array().cloned().unwrap_or_default());
        cursor = page["next"].as_str().map(str::to_owned);
        if progress {
            eprint!("\rfetched {} {listing}…", items.len());
            let _ = std::io::stderr().flush();
        }
        if !all || cursor.is_none() {
            break;
        }
    }
    if progress {
        eprintln!();
    }
    print_items(cli, listing, &items);
    if let (false, Some(c)) = (all, cursor) {
        eprintln!("more: add --all, or pass cursor {c}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_aligns_columns_and_summarizes_nested_values() {
        let items = vec![
            serde_json::json!({"instance_id": "i1", "operation_id": "op-1", "state": "gave_up",
                "attempts": [{"outcome": "http_status", "status": 500}, {"outcome": "timeout", "status": null}],
                "destination": "https://hooks.example:443", "updated_at": "2026-12-02T05:00:00Z"}),
            serde_json::json!({"instance_id": "a-longer-id", "operation_id": "op-2", "state": "retrying",
                "attempts": [], "destination": "https://x:443", "updated_at": null}),
        ];
        let t = table("callbacks", &items);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("INSTANCE     OPERATION  STATE     ATTEMPTS"));
        assert!(lines[1].contains("2 (last: timeout)"), "{t}");
        assert!(
            lines[2].contains("a-longer-id  op-2       retrying  -"),
            "{t}"
        );
        assert!(lines[2].ends_with("-"), "{t}");
        let leases = table(
            "instances",
            &[
                serde_json::json!({"instance_id": "l1", "lease_of": {"owner_tenant": "cf1", "owner_instance_id": "o1"}}),
            ],
        );
        assert!(leases.contains("cf1/o1"), "{leases}");
    }
}
