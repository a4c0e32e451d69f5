//! What our parse and cryptsetup's `luksDump --dump-json-metadata` must agree on, shared by the
//! validation and mutation tests.

pub(crate) fn u64_of(v: &serde_json::Value) -> Option<u64> {
    v.as_str().and_then(luks2::metadata::parse_u64_field)
}

/// Numbers as f64: json-c prints a double parsed from `2e+` as `2`, which reads back as an
/// integer; the value is what must agree, not its spelling.
pub(crate) fn numbers_as_f64(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Number(n) => serde_json::json!(n.as_f64()),
        serde_json::Value::Array(a) => {
            serde_json::Value::Array(a.iter().map(numbers_as_f64).collect())
        }
        serde_json::Value::Object(m) => serde_json::Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), numbers_as_f64(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// What both implementations must agree on after parsing: entry numbers, token contents,
/// segment placement, digest bindings, config sizes, flags and requirements.
pub(crate) fn projection(v: &serde_json::Value) -> serde_json::Value {
    let keys = |s: &str| {
        let mut k: Vec<String> = v[s]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        k.sort();
        k
    };
    let segments: serde_json::Map<String, serde_json::Value> = v["segments"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, s)| {
                    (
                        k.clone(),
                        serde_json::json!([
                            s["type"],
                            u64_of(&s["offset"]),
                            s["size"].as_str().map(|z| if z == "dynamic" {
                                None
                            } else {
                                u64_of(&s["size"])
                            })
                        ]),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let digests: serde_json::Map<String, serde_json::Value> = v["digests"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, d)| {
                    (
                        k.clone(),
                        serde_json::json!([d["type"], d["keyslots"], d["segments"]]),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    serde_json::json!({
        "keyslots": keys("keyslots"),
        "tokens": numbers_as_f64(&v["tokens"]),
        "segments": segments,
        "digests": digests,
        "config": [u64_of(&v["config"]["json_size"]), u64_of(&v["config"]["keyslots_size"]),
                   v["config"]["flags"], v["config"]["requirements"]["mandatory"]],
    })
}
