//! What every provisioned waypoint shares (the controller's flags), and what one Gateway may
//! change for itself.
//!
//! Per Gateway, `spec.infrastructure.annotations` may set the replica count and resources
//! (the Gateway API's place for per-Gateway infrastructure settings). `parametersRef` is not
//! read yet: a Gateway naming one is refused (`InvalidParameters`). A malformed value refuses the Gateway naming the annotation, rather than
//! silently falling back to a default the operator did not ask for.

use serde_json::{Map, Value, json};

use crate::status::ControllerName;

use super::mode::Refusal;

/// `spec.infrastructure.annotations` key: the Deployment's replicas (0..=100).
pub const REPLICAS_ANNOTATION: &str = "waypoint.dev/replicas";
/// `spec.infrastructure.annotations` key: the container's CPU request (`250m`).
pub const CPU_REQUEST_ANNOTATION: &str = "waypoint.dev/cpu-request";
/// `spec.infrastructure.annotations` key: the container's memory request (`256Mi`).
pub const MEMORY_REQUEST_ANNOTATION: &str = "waypoint.dev/memory-request";
/// `spec.infrastructure.annotations` key: the container's CPU limit.
pub const CPU_LIMIT_ANNOTATION: &str = "waypoint.dev/cpu-limit";
/// `spec.infrastructure.annotations` key: the container's memory limit.
pub const MEMORY_LIMIT_ANNOTATION: &str = "waypoint.dev/memory-limit";

/// The most replicas a Gateway may ask for: a typo (`1000`) should not flood a cluster.
const MAX_REPLICAS: u64 = 100;

/// Container resources; `None` leaves the request or limit unset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resources {
    /// CPU request.
    pub cpu_request: Option<String>,
    /// Memory request.
    pub memory_request: Option<String>,
    /// CPU limit (none by default: throttling a proxy adds latency to every request).
    pub cpu_limit: Option<String>,
    /// Memory limit.
    pub memory_limit: Option<String>,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpu_request: Some("100m".into()),
            memory_request: Some("128Mi".into()),
            cpu_limit: None,
            memory_limit: Some("1Gi".into()),
        }
    }
}

impl Resources {
    /// The container's `resources`.
    pub(super) fn to_json(&self) -> Value {
        let pick = |pairs: [(&str, &Option<String>); 2]| {
            let map: Map<String, Value> = pairs
                .iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| ((*k).to_owned(), json!(v))))
                .collect();
            map
        };
        let requests = pick([("cpu", &self.cpu_request), ("memory", &self.memory_request)]);
        let limits = pick([("cpu", &self.cpu_limit), ("memory", &self.memory_limit)]);
        let mut resources = Map::new();
        if !limits.is_empty() {
            resources.insert("limits".into(), Value::Object(limits));
        }
        if !requests.is_empty() {
            resources.insert("requests".into(), Value::Object(requests));
        }
        Value::Object(resources)
    }
}

/// The settings every provisioned waypoint gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderOptions {
    /// Our controller name: passed to the waypoints (they write status under it) and marking
    /// the cluster-scoped objects we own.
    pub controller: ControllerName,
    /// The waypoint container image.
    pub image: String,
    /// The mesh's trust domain.
    pub trust_domain: String,
    /// istiod's certificate service, for native waypoints.
    pub ca_address: String,
    /// The cluster's DNS suffix.
    pub cluster_domain: String,
    /// Replicas unless the Gateway says otherwise.
    pub replicas: u32,
    /// Resources unless the Gateway says otherwise.
    pub resources: Resources,
}

/// The replicas and resources of one Gateway: `options` overridden by its infrastructure
/// annotations.
pub(super) fn sizing(
    annotations: &Map<String, Value>,
    options: &RenderOptions,
) -> Result<(u64, Resources), Refusal> {
    let text = |key: &str| -> Result<Option<String>, Refusal> {
        match annotations.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
            Some(_) => Err(bad(key, "is not a string")),
        }
    };
    let replicas = match text(REPLICAS_ANNOTATION)? {
        None => u64::from(options.replicas),
        Some(value) => match value.parse::<u64>() {
            Ok(n) if n <= MAX_REPLICAS => n,
            _ => {
                return Err(bad(
                    REPLICAS_ANNOTATION,
                    &format!("{value:?} is not a replica count in 0..={MAX_REPLICAS}"),
                ));
            }
        },
    };
    let mut resources = options.resources.clone();
    let fields = [
        (CPU_REQUEST_ANNOTATION, &mut resources.cpu_request),
        (MEMORY_REQUEST_ANNOTATION, &mut resources.memory_request),
        (CPU_LIMIT_ANNOTATION, &mut resources.cpu_limit),
        (MEMORY_LIMIT_ANNOTATION, &mut resources.memory_limit),
    ];
    for (key, field) in fields {
        if let Some(value) = text(key)? {
            if !is_quantity(&value) {
                return Err(bad(
                    key,
                    &format!("{value:?} is not a Kubernetes quantity (like 250m, 1, 512Mi, 1Gi)"),
                ));
            }
            *field = Some(value);
        }
    }
    Ok((replicas, resources))
}

fn bad(key: &str, why: &str) -> Refusal {
    Refusal {
        reason: "Invalid",
        message: format!("spec.infrastructure.annotations[{key:?}]: {why}"),
    }
}

/// A Kubernetes quantity as people write them: a decimal number and an optional suffix.
pub fn is_quantity(s: &str) -> bool {
    const SUFFIXES: [&str; 13] = [
        "", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi",
    ];
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let mut parts = number.split('.');
    let whole = parts.next().unwrap_or_default();
    let fraction = parts.next();
    parts.next().is_none()
        && !whole.is_empty()
        && fraction.is_none_or(|f| !f.is_empty())
        && SUFFIXES.contains(&suffix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_numbers_with_known_suffixes() {
        for ok in ["1", "250m", "0.5", "512Mi", "1Gi", "2G", "100k"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "Mi", "1.", ".5", "1.2.3", "12MB", "-1", "1 Gi"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn annotations_override_the_defaults_and_bad_values_name_the_annotation() {
        let options = RenderOptions {
            controller: ControllerName::default(),
            image: "i".into(),
            trust_domain: "td".into(),
            ca_address: "ca:1".into(),
            cluster_domain: "cluster.local".into(),
            replicas: 2,
            resources: Resources::default(),
        };
        let none = Map::new();
        assert_eq!(sizing(&none, &options), Ok((2, Resources::default())));
        let given: Map<String, Value> = serde_json::from_value(json!({
            REPLICAS_ANNOTATION: "3", CPU_LIMIT_ANNOTATION: "2", MEMORY_REQUEST_ANNOTATION: "256Mi",
        }))
        .unwrap_or_default();
        let (replicas, resources) = sizing(&given, &options).expect("valid");
        assert_eq!(replicas, 3);
        assert_eq!(resources.cpu_limit.as_deref(), Some("2"));
        assert_eq!(resources.memory_request.as_deref(), Some("256Mi"));
        for (key, value) in [
            (REPLICAS_ANNOTATION, "many"),
            (REPLICAS_ANNOTATION, "101"),
            (MEMORY_LIMIT_ANNOTATION, "1GB"),
        ] {
            let mut bad = Map::new();
            bad.insert(key.into(), json!(value));
            let refusal = sizing(&bad, &options).expect_err(value);
            assert!(refusal.message.contains(key), "{}", refusal.message);
        }
    }
}
