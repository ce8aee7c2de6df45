//! Server-side apply (`PATCH` with `application/apply-patch+yaml`), approximated.
//!
//! The API server tracks which manager owns each field (`managedFields`) and, on apply, sets
//! the fields the applied object names, removes the fields this manager applied before and
//! leaves out now, and keeps every field other managers own. The emulator keeps no field
//! ownership. It approximates what a single controller applying whole objects with
//! `force=true` observes:
//!
//! - a missing object is created from the applied one;
//! - otherwise every top-level field of the applied object but `metadata` and `status`
//!   replaces the stored one whole (so a field someone else added under `spec` is dropped,
//!   where a real server would keep it), and the applied object's `labels`, `annotations` and
//!   `ownerReferences` replace the stored ones when it names them;
//! - `status` is never taken from an apply to the main resource (it is a subresource).
//!
//! `fieldManager` is required, as on a real server; `force` is accepted and implied (there is
//! no ownership to conflict over).

use serde_json::Value;

/// The metadata fields an apply sets.
const APPLIED_METADATA: [&str; 3] = ["labels", "annotations", "ownerReferences"];

/// `stored` with the fields of `applied` set as described in the module docs.
pub(crate) fn apply_over(stored: &Value, applied: &Value) -> Value {
    let mut result = stored.clone();
    let (Some(fields), Some(target)) = (applied.as_object(), result.as_object_mut()) else {
        return result;
    };
    for (field, value) in fields {
        match field.as_str() {
            "status" => {}
            "metadata" => {
                let Some(meta) = target.get_mut("metadata").and_then(Value::as_object_mut) else {
                    continue;
                };
                for name in APPLIED_METADATA {
                    if let Some(given) = value.get(name) {
                        meta.insert(name.to_owned(), given.clone());
                    }
                }
            }
            _ => {
                target.insert(field.clone(), value.clone());
            }
        }
    }
    result
}

/// The applied object from a request body: JSON, or YAML (which JSON also is).
pub(crate) fn parse_body(bytes: &[u8]) -> Result<Value, String> {
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let text = std::str::from_utf8(bytes).map_err(|e| format!("the body is not UTF-8: {e}"))?;
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    serde_saphyr::from_str_with_options(text, options).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_apply_replaces_named_fields_and_keeps_server_metadata_and_status() {
        let stored = json!({
            "metadata": {"name": "a", "uid": "u", "labels": {"x": "1"}, "resourceVersion": "5"},
            "spec": {"replicas": 1, "extra": true},
            "status": {"ready": 1},
        });
        let applied = json!({
            "metadata": {"name": "a", "labels": {"y": "2"}},
            "spec": {"replicas": 2},
            "status": {"ready": 9},
        });
        let result = apply_over(&stored, &applied);
        assert_eq!(result["spec"], json!({"replicas": 2}));
        assert_eq!(result["metadata"]["labels"], json!({"y": "2"}));
        assert_eq!(result["metadata"]["uid"], "u");
        assert_eq!(result["status"], json!({"ready": 1}));
    }

    #[test]
    fn a_body_is_read_as_json_or_as_yaml() {
        assert_eq!(parse_body(b"{\"a\": 1}").ok(), Some(json!({"a": 1})));
        assert_eq!(
            parse_body(b"a: 1\nb: no\n").ok(),
            Some(json!({"a": 1, "b": "no"}))
        );
        assert!(parse_body(b"a: [").is_err());
    }
}
