//! Core Kubernetes resources: Service and Secret (`v1`), EndpointSlice (`discovery.k8s.io/v1`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, de};

use super::ObjectMeta;

/// A Service (`v1`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Service {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    #[serde(default)]
    pub spec: ServiceSpec,
}
object!(Service, "Service");

/// The spec of a Service.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceSpec {
    /// The primary cluster IP; `None` or `""` if not yet allocated, `"None"` if headless.
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    /// All cluster IPs (dual stack); the first equals `clusterIP`.
    #[serde(rename = "clusterIPs")]
    pub cluster_ips: Vec<String>,
    /// ClusterIP (default), NodePort, LoadBalancer or ExternalName.
    #[serde(rename = "type")]
    pub kind: ServiceType,
    /// Ports.
    pub ports: Vec<ServicePort>,
    /// Pod selector.
    pub selector: BTreeMap<String, String>,
    /// The DNS name of an ExternalName Service.
    pub external_name: Option<String>,
}

/// The type of a Service.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
    ExternalName,
}

/// A transport protocol.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[allow(missing_docs, clippy::upper_case_acronyms)]
pub enum Protocol {
    #[default]
    TCP,
    UDP,
    SCTP,
}

/// One Service port.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// Name (required when there are several ports); matched against EndpointSlice port names.
    #[serde(default)]
    pub name: String,
    /// The port clients dial.
    pub port: u16,
    /// The pod port: a number, or a container port name; default = `port`.
    #[serde(default)]
    pub target_port: Option<TargetPort>,
    /// Protocol, default TCP.
    #[serde(default)]
    pub protocol: Protocol,
    /// Application protocol (`kubernetes.io/h2c`, `http`, `grpc`, ...).
    #[serde(default)]
    pub app_protocol: Option<String>,
}

/// A Service `targetPort`: a number or a named container port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetPort {
    /// A port number.
    Number(u16),
    /// A container port name (resolved through EndpointSlices).
    Name(String),
}

impl<'de> Deserialize<'de> for TargetPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = TargetPort;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number (1-65535) or a port name")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TargetPort, E> {
                match u16::try_from(v) {
                    Ok(p) if p != 0 => Ok(TargetPort::Number(p)),
                    _ => Err(E::invalid_value(de::Unexpected::Unsigned(v), &self)),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TargetPort, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TargetPort, E> {
                // Kubernetes accepts a numeric string here too (IntOrString).
                match v.parse::<u64>() {
                    Ok(n) => self.visit_u64(n),
                    Err(_) if !v.is_empty() => Ok(TargetPort::Name(v.to_owned())),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// An EndpointSlice (`discovery.k8s.io/v1`): some endpoints of the Service named by its
/// `kubernetes.io/service-name` label.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSlice {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// IPv4, IPv6 or FQDN.
    pub address_type: AddressType,
    /// Endpoints.
    #[serde(default)]
    pub endpoints: Vec<SliceEndpoint>,
    /// Ports, shared by all endpoints.
    #[serde(default)]
    pub ports: Vec<EndpointPort>,
}
object!(EndpointSlice, "EndpointSlice");

/// The label naming the Service an EndpointSlice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

impl EndpointSlice {
    /// The owning Service's name, from the `kubernetes.io/service-name` label.
    pub fn service_name(&self) -> Option<&str> {
        self.metadata
            .labels
            .get(SERVICE_NAME_LABEL)
            .map(String::as_str)
    }
}

/// The address family of an EndpointSlice.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[allow(missing_docs, clippy::upper_case_acronyms)]
pub enum AddressType {
    IPv4,
    IPv6,
    FQDN,
}

/// One endpoint (usually a pod).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct SliceEndpoint {
    /// Addresses (the first is used by convention).
    pub addresses: Vec<String>,
    /// Readiness.
    pub conditions: EndpointConditions,
    /// Hostname.
    pub hostname: Option<String>,
    /// Node.
    pub node_name: Option<String>,
    /// Zone.
    pub zone: Option<String>,
    /// The pod, verbatim.
    pub target_ref: Option<serde_json::Value>,
}

/// Endpoint conditions; `None` means unknown, which Kubernetes says to read as ready/serving.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct EndpointConditions {
    /// Ready to receive traffic.
    pub ready: Option<bool>,
    /// Serving (may be true while terminating).
    pub serving: Option<bool>,
    /// Terminating.
    pub terminating: Option<bool>,
}

/// A port of an EndpointSlice.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct EndpointPort {
    /// Name, equal to the Service port's name.
    pub name: String,
    /// Port number; `None` means all ports.
    pub port: Option<u16>,
    /// Protocol, default TCP.
    pub protocol: Protocol,
    /// Application protocol.
    pub app_protocol: Option<String>,
}

/// A Secret (`v1`). waypoint reads `kubernetes.io/tls` Secrets, the certificates of HTTPS
/// listeners; other types are kept (a listener naming one gets `InvalidCertificateRef`).
/// `Debug` shows the keys, never the values.
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Secret {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// `kubernetes.io/tls`, `Opaque` (the default), ...
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// Values, base64-encoded (`tls.crt`, `tls.key`).
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    /// Values in plain text; the API server merges them into `data`, winning over it.
    #[serde(default)]
    pub string_data: BTreeMap<String, String>,
}
object!(Secret, "Secret");

/// The Secret type of TLS certificates.
pub const SECRET_TYPE_TLS: &str = "kubernetes.io/tls";

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("metadata", &self.metadata)
            .field("type", &self.kind)
            .field("data", &self.data.keys().collect::<Vec<_>>())
            .field("string_data", &self.string_data.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Secret {
    /// True for a `kubernetes.io/tls` Secret.
    pub fn is_tls(&self) -> bool {
        self.kind.as_deref() == Some(SECRET_TYPE_TLS)
    }

    /// The decoded value of `key` (`stringData` first, as the API server merges them) and the
    /// field it came from, or why it cannot be read. `Ok(None)` when the key is absent.
    pub fn value(&self, key: &str) -> Result<Option<(Vec<u8>, String)>, String> {
        use base64::Engine as _;
        if let Some(v) = self.string_data.get(key) {
            return Ok(Some((v.as_bytes().to_vec(), format!("stringData[{key}]"))));
        }
        let Some(encoded) = self.data.get(key) else {
            return Ok(None);
        };
        let field = format!("data[{key}]");
        // Manifests often wrap long base64 values; whitespace is not part of the value.
        let compact: String = encoded.split_ascii_whitespace().collect();
        base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .map(|bytes| Some((bytes, field.clone())))
            .map_err(|e| format!("{field}: not base64: {e}"))
    }
}
