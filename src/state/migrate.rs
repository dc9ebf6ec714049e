//! Migrations of an older state to `records::VERSION`, run by `Store::open` under the lock: the
//! whole store is rewritten in one sled transaction (with the serial bumped and a `migrate`
//! history entry), so a migration interrupted at any point leaves the old state as it was.
//!
//! 1 → 2: records were the library's types. Addresses were `{"kind", "name", "key"}`
//! objects; a stage's rate was `{"PerSecond": 300.0}` or `"Max"`; a request was
//! `{"Body": …}` or `{"Data": {…}}`; `observed` was untagged (it gets its provider's tag,
//! see `observed::Observed::from_v1`). Fingerprints are recomputed over the new records, and
//! the upstream fingerprints a load test (and its runs) recorded are carried over where they
//! matched the upstream's recorded one, so a state that planned clean still plans clean.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::records::{self as schema, IntentRecord, Meta, Observed, ResourceRecord, RunRecord};
use super::{StateError, decode, encode, hist_key};

pub(super) fn migrate(db: &sled::Db, dir: &Path, meta: Meta) -> Result<(), StateError> {
    let from = meta.schema_version;
    let to = schema::VERSION;
    let fail = |reason: String| StateError::Migrate {
        dir: dir.to_path_buf(),
        from,
        to,
        reason,
    };
    if from != 1 {
        return Err(fail(format!("no migration from schema {from}")));
    }
    let mut writes: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();

    // Resources: convert, recompute fingerprints, remember old → new per address.
    let mut resources: Vec<ResourceRecord> = Vec::new();
    let mut old_fp: BTreeMap<String, String> = BTreeMap::new();
    for kv in db.scan_prefix(b"res/") {
        let (k, v) = kv?;
        let key = String::from_utf8_lossy(&k).into_owned();
        let old: Value = decode(&key, &v)?;
        let r = resource_v1_to_v2(old).map_err(|e| fail(format!("{key}: {e}")))?;
        old_fp.insert(r.address.to_string(), r.fingerprint.clone());
        resources.push(r);
    }
    let mut new_fp: BTreeMap<String, String> = BTreeMap::new();
    for r in &mut resources {
        r.fingerprint = schema::fingerprint_record(&r.config, &r.rendered);
        new_fp.insert(r.address.to_string(), r.fingerprint.clone());
    }
    let carry = |upstream: &mut BTreeMap<String, String>| {
        for (a, fp) in upstream.iter_mut() {
            if old_fp.get(a) == Some(fp)
                && let Some(n) = new_fp.get(a)
            {
                *fp = n.clone();
            }
        }
    };
    for r in &mut resources {
        carry(&mut r.upstream);
        writes.push((format!("res/{}", r.address).into_bytes(), encode(r)));
    }

    for kv in db.scan_prefix(b"intent/") {
        let (k, v) = kv?;
        let key = String::from_utf8_lossy(&k).into_owned();
        let old: Value = decode(&key, &v)?;
        let i = intent_v1_to_v2(old).map_err(|e| fail(format!("{key}: {e}")))?;
        writes.push((k.to_vec(), encode(&i)));
    }

    for kv in db.scan_prefix(b"run/") {
        let (k, v) = kv?;
        let key = String::from_utf8_lossy(&k).into_owned();
        let mut old: Value = decode(&key, &v)?;
        address_field(&mut old, "address").map_err(|e| fail(format!("{key}: {e}")))?;
        let mut run: RunRecord =
            serde_json::from_value(old).map_err(|e| fail(format!("{key}: {e}")))?;
        let a = run.address.to_string();
        if old_fp.get(&a) == Some(&run.config_hash)
            && let Some(n) = new_fp.get(&a)
        {
            run.config_hash = n.clone();
        }
        carry(&mut run.upstream);
        writes.push((k.to_vec(), encode(&run)));
    }

    let mut meta = meta;
    let history_id = meta.next_history_id;
    meta.next_history_id += 1;
    meta.serial += 1;
    meta.schema_version = to;
    let mut entry = super::history_entry("migrate", None, Some(&format!("schema {from} → {to}")));
    entry.id = history_id;
    entry.result = "ok".into();
    writes.push((hist_key(history_id), encode(&entry)));
    writes.push((b"meta".to_vec(), encode(&meta)));

    db.transaction(|tx| {
        for (k, v) in &writes {
            tx.insert(k.as_slice(), v.as_slice())?;
        }
        Ok::<_, ConflictableTransactionError<StateError>>(())
    })
    .map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StateError::Db(e),
    })?;
    db.flush()?;
    Ok(())
}

/// `{"kind": "serving", "name": "tf", "key": "small"}` → `serving.tf["small"]`.
fn address_v1(v: &Value) -> Result<Value, String> {
    let kind = v["kind"].as_str();
    let name = v["name"].as_str();
    match (kind, name) {
        (Some(kind), Some(name)) => {
            let mut s = format!("{kind}.{name}");
            if let Some(k) = v["key"].as_str() {
                s.push_str(&format!("[{k:?}]"));
            }
            crate::vocab::resources::Address::parse(&s).map_err(|e| e.to_string())?;
            Ok(Value::String(s))
        }
        _ => Err(format!("expected an address object, found {v}")),
    }
}

fn address_field(o: &mut Value, field: &str) -> Result<(), String> {
    if let Some(v) = o.get_mut(field) {
        *v = address_v1(v)?;
    }
    Ok(())
}

fn address_list(o: &mut Value, field: &str) -> Result<(), String> {
    if let Some(Value::Array(items)) = o.get_mut(field) {
        for v in items {
            *v = address_v1(v)?;
        }
    }
    Ok(())
}

fn config_v1_to_v2(c: &mut Value) -> Result<(), String> {
    for f in ["cluster", "target"] {
        address_field(c, f)?;
    }
    address_list(c, "models")?;
    if let Some(Value::Array(stages)) = c.get_mut("stages") {
        for s in stages {
            if let Some(rate) = s.get_mut("rate") {
                *rate = match rate.take() {
                    Value::Object(m) if m.contains_key("PerSecond") => m["PerSecond"].clone(),
                    Value::String(m) if m == "Max" => Value::String("max".into()),
                    other => return Err(format!("unknown stage rate {other}")),
                };
            }
        }
    }
    if let Some(request) = c.get_mut("request") {
        *request = match request.take() {
            Value::Object(m) if m.len() == 1 => {
                let (k, v) = m.into_iter().next().unwrap_or_default();
                let mut out = Map::new();
                out.insert(k.to_lowercase(), v);
                Value::Object(out)
            }
            other => return Err(format!("unknown request {other}")),
        };
    }
    Ok(())
}

fn resource_v1_to_v2(mut r: Value) -> Result<ResourceRecord, String> {
    address_field(&mut r, "address")?;
    address_list(&mut r, "depends_on")?;
    if let Some(c) = r.get_mut("config") {
        config_v1_to_v2(c)?;
    }
    // `observed` gets its provider's type.
    let address =
        crate::vocab::resources::Address::parse(r["address"].as_str().unwrap_or_default())
            .map_err(|e| e.to_string())?;
    let provider = r["provider"].as_str().unwrap_or_default().to_string();
    let observed = Observed::from_json(&provider, address.kind, &r["observed"])?;
    r["observed"] = serde_json::to_value(observed).map_err(|e| e.to_string())?;
    serde_json::from_value(r).map_err(|e| e.to_string())
}

fn intent_v1_to_v2(mut i: Value) -> Result<IntentRecord, String> {
    address_field(&mut i, "address")?;
    address_list(&mut i, "depends_on")?;
    if let Some(c) = i.get_mut("config").filter(|c| !c.is_null()) {
        config_v1_to_v2(c)?;
    }
    serde_json::from_value(i).map_err(|e| e.to_string())
}
