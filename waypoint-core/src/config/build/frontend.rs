//! TLS Secrets compiled into servable keys, and the certificates of Gateway HTTPS listeners
//! resolved (kind, namespace, ReferenceGrant) into one SNI-resolving server configuration per
//! Gateway address and port.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::sign::CertifiedKey;

use crate::config::resources::{
    GATEWAY_API_GROUP, Gateway, Listener, Object, ReferenceGrant, Resources, Secret,
    SecretObjectReference, Sourced, TlsMode,
};
use crate::config::{ListenerRefProblem, ResourceRef, ResourceStatus};
use crate::tls::frontend::{FrontendTls, SniResolver, certified_key};

use super::{condition, invalid};

/// TLS Secrets by `(namespace, name)`.
pub(super) type SecretKeys = HashMap<(String, String), Arc<CertifiedKey>>;

/// Keeps the valid Secrets, compiling the `kubernetes.io/tls` ones; a TLS Secret whose
/// certificate or key cannot be used is rejected with the field named.
pub(super) fn compile_secrets(
    secrets: Vec<Sourced<Secret>>,
    statuses: &mut Vec<ResourceStatus>,
) -> (Vec<Sourced<Secret>>, SecretKeys) {
    let mut kept = Vec::new();
    let mut keys = SecretKeys::new();
    for secret in secrets {
        let rref = secret.resource_ref();
        if !secret.is_tls() {
            statuses.push(condition(
                rref.clone(),
                &secret.source,
                true,
                "Accepted",
                format!("{rref} is valid"),
            ));
            kept.push(secret);
            continue;
        }
        match tls_key(&secret) {
            Ok(key) => {
                let m = &secret.metadata;
                keys.insert((m.namespace().to_owned(), m.name.clone()), key);
                let message = format!("{rref} is valid");
                statuses.push(condition(rref, &secret.source, true, "Accepted", message));
                kept.push(secret);
            }
            Err(why) => statuses.push(invalid(
                rref.clone(),
                &secret.source,
                format!("{rref}: {why}"),
            )),
        }
    }
    (kept, keys)
}

fn tls_key(secret: &Secret) -> Result<Arc<CertifiedKey>, String> {
    let required = |key: &str| match secret.value(key)? {
        Some(found) => Ok(found),
        None => Err(format!(
            "data[{key}]: required in a kubernetes.io/tls Secret"
        )),
    };
    let (chain, chain_field) = required("tls.crt")?;
    let (key, key_field) = required("tls.key")?;
    certified_key(&chain, &chain_field, &key, &key_field)
}

/// What building the HTTPS listeners gave: the server configurations, and the problem of each
/// listener whose certificate could not be used, by `(Gateway, listener name)`.
pub(super) struct FrontendBuild {
    pub(super) tls: FrontendTls,
    pub(super) problems: HashMap<(ResourceRef, String), ListenerRefProblem>,
}

/// Resolves the certificates of every TLS-terminating HTTPS listener and groups them by the
/// addresses their Gateways are served at.
pub(super) fn build_frontend(resources: &Resources, keys: &SecretKeys) -> FrontendBuild {
    let mut problems = HashMap::new();
    let mut resolvers: HashMap<SocketAddr, SniResolver> = HashMap::new();
    for gw in &resources.gateways {
        let addresses = gw.ip_addresses();
        for (li, l) in gw.spec.listeners.iter().enumerate() {
            if l.protocol != "HTTPS" {
                continue;
            }
            let at = format!("spec.listeners[{li}].tls");
            let (key, problem) = listener_key(gw, l, &at, resources, keys);
            if let Some(problem) = problem {
                problems.insert((gw.resource_ref(), l.name.clone()), problem);
            }
            let Some(key) = key else { continue };
            for ip in &addresses {
                resolvers
                    .entry(SocketAddr::new(*ip, l.port))
                    .or_default()
                    .add(l.hostname.as_deref(), key.clone());
            }
        }
    }
    let mut configs = HashMap::new();
    for (addr, resolver) in resolvers {
        match resolver.into_server_config() {
            Ok(config) => {
                configs.insert(addr, config);
            }
            // The fixed protocol versions are supported by the provider: this cannot happen,
            // but if it did the address would be refused rather than served in plain text.
            Err(error) => tracing::error!(%addr, %error, "cannot build the TLS configuration"),
        }
    }
    FrontendBuild {
        tls: FrontendTls::new(configs),
        problems,
    }
}

/// The key an HTTPS listener serves (the first usable certificateRef), and the first problem
/// among its refs.
fn listener_key(
    gw: &Gateway,
    l: &Listener,
    at: &str,
    resources: &Resources,
    keys: &SecretKeys,
) -> (Option<Arc<CertifiedKey>>, Option<ListenerRefProblem>) {
    let problem = |reason: &str, message: String| ListenerRefProblem {
        reason: reason.into(),
        message,
    };
    let Some(tls) = &l.tls else {
        let why = format!("{at}: required for protocol HTTPS");
        return (None, Some(problem("InvalidCertificateRef", why)));
    };
    if tls.mode == TlsMode::Passthrough {
        let why = format!("{at}.mode: Passthrough is not supported on HTTPS listeners");
        return (None, Some(problem("InvalidCertificateRef", why)));
    }
    if tls.certificate_refs.is_empty() {
        let why = format!("{at}.certificateRefs: at least one Secret is needed to terminate TLS");
        return (None, Some(problem("InvalidCertificateRef", why)));
    }
    let gw_ns = gw.metadata.namespace();
    let mut first_problem = None;
    let mut key = None;
    for (i, r) in tls.certificate_refs.iter().enumerate() {
        match resolve_ref(r, gw_ns, &resources.reference_grants, keys) {
            Ok(k) => {
                key.get_or_insert(k);
            }
            Err((reason, why)) => {
                first_problem.get_or_insert_with(|| {
                    problem(reason, format!("{at}.certificateRefs[{i}]: {why}"))
                });
            }
        }
    }
    (key, first_problem)
}

fn resolve_ref(
    r: &SecretObjectReference,
    gw_ns: &str,
    grants: &[Sourced<ReferenceGrant>],
    keys: &SecretKeys,
) -> Result<Arc<CertifiedKey>, (&'static str, String)> {
    if !(r.group.is_empty() || r.group == "core") || r.kind != "Secret" {
        let why = format!("{}/{} is not a Secret", r.group, r.kind);
        return Err(("InvalidCertificateRef", why));
    }
    let ns = r.namespace.as_deref().unwrap_or(gw_ns);
    if ns != gw_ns && !granted(grants, gw_ns, ns, &r.name) {
        let why = format!(
            "Secret {ns}/{} is in another namespace and no ReferenceGrant in {ns} allows Gateways from {gw_ns}",
            r.name
        );
        return Err(("RefNotPermitted", why));
    }
    keys.get(&(ns.to_owned(), r.name.clone()))
        .cloned()
        .ok_or_else(|| {
            let why = format!(
                "Secret {ns}/{} does not exist, is not of type kubernetes.io/tls, or was rejected",
                r.name
            );
            ("InvalidCertificateRef", why)
        })
}

/// Whether a ReferenceGrant in `ns` lets Gateways of `from_ns` refer to Secret `name`.
fn granted(grants: &[Sourced<ReferenceGrant>], from_ns: &str, ns: &str, name: &str) -> bool {
    grants
        .iter()
        .filter(|g| g.metadata.namespace() == ns)
        .any(|g| {
            g.spec.from.iter().any(|f| {
                f.group == GATEWAY_API_GROUP && f.kind == "Gateway" && f.namespace == from_ns
            }) && g.spec.to.iter().any(|t| {
                t.group.is_empty()
                    && t.kind == "Secret"
                    && t.name.as_deref().is_none_or(|n| n == name)
            })
        })
}
