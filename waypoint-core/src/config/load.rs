//! Reading manifests: files → documents → typed resources.
//!
//! The input is what `kubectl apply -f` takes: multi-document YAML (or JSON), `List` kinds
//! included. A document of a known kind that does not deserialize is rejected on its own, with
//! a status naming the field; only input that cannot be read as documents at all (I/O errors,
//! YAML syntax, a document without `kind`) fails the whole load, because then nobody can say
//! which resources it was meant to hold.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::build::{EndpointStatsCache, build, invalid};
use super::resources::{
    GATEWAY_API_GROUP, ISTIO_NETWORKING_GROUP, ObjectMeta, RawObject, Resources, Sourced,
};
use super::{Config, ResourceRef, ResourceStatus};

/// Why manifests could not be read at all. (A resource that is merely invalid is not an error:
/// it gets a [`ResourceStatus`] and the rest loads.)
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file or directory could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The text is not valid YAML/JSON.
    #[error("{at}: syntax error: {message}")]
    Syntax {
        /// File and line.
        at: String,
        /// The parser's message.
        message: String,
    },
    /// A document is not a Kubernetes object (no `kind`, or not a mapping).
    #[error("{at}: {message}")]
    Document {
        /// File, document index and line.
        at: String,
        /// What is wrong.
        message: String,
    },
}

/// Loads a file, or every `*.yaml`/`*.yml`/`*.json` file of a directory, with a fresh
/// [`EndpointStatsCache`]: a one-shot load shares endpoint stats with nothing. A process that
/// reloads (and so wants an endpoint's stats to survive the swap) passes its own cache to
/// [`load_path_with`].
pub fn load_path(path: &Path) -> Result<Config, LoadError> {
    load_path_with(path, &EndpointStatsCache::new())
}

/// [`load_path`] with an explicit endpoint stats cache.
///
/// A directory is read non-recursively, in file-name order. Hidden entries are skipped: that
/// covers the `..data` and `..<timestamp>` directories of a mounted Kubernetes ConfigMap, whose
/// visible `name.yaml` entries are symlinks into them (symlinks are followed).
pub fn load_path_with(path: &Path, cache: &EndpointStatsCache) -> Result<Config, LoadError> {
    let mut reader = Reader::default();
    for file in manifest_files(path)? {
        let text = std::fs::read_to_string(&file).map_err(|source| LoadError::Read {
            path: file.clone(),
            source,
        })?;
        let json = has_extension(&file, "json");
        reader.add_text(&text, &file.display().to_string(), json)?;
    }
    Ok(reader.finish(cache))
}

/// Parses manifests (multi-document YAML; JSON is YAML too) from a string; `source` names it
/// in statuses and errors. Builds with a fresh [`EndpointStatsCache`], as [`load_path`] does.
pub fn parse_manifests(text: &str, source: &str) -> Result<Config, LoadError> {
    parse_manifests_with(text, source, &EndpointStatsCache::new())
}

/// [`parse_manifests`] with an explicit endpoint stats cache.
pub fn parse_manifests_with(
    text: &str,
    source: &str,
    cache: &EndpointStatsCache,
) -> Result<Config, LoadError> {
    let mut reader = Reader::default();
    reader.add_text(text, source, false)?;
    Ok(reader.finish(cache))
}

/// Builds a config from objects that arrive one by one rather than as text (the Kubernetes
/// API source), each with the label its statuses name as source (`kube:HTTPRoute
/// default/echo`). It is the same reader and builder the files go through: an object that does
/// not deserialize is left out with a status naming its field, and the rest loads. Objects are
/// read in the order given; give them in a stable order so that duplicate detection and the
/// order of statuses do not depend on the order events arrived in. Only an object without a
/// `kind`, or that is not a mapping, fails the build.
pub fn load_objects_with(
    objects: impl IntoIterator<Item = (String, Value)>,
    cache: &EndpointStatsCache,
) -> Result<Config, LoadError> {
    let mut reader = Reader::default();
    for (source, object) in objects {
        reader.add_document(object, &source, 0)?;
    }
    Ok(reader.finish(cache))
}

/// A hash of the names, sizes, modification times and contents of the files [`load_path`]
/// would read: when it is unchanged, a reload would give the same config. Contents are hashed
/// because a same-size edit within the file system's mtime granularity must not be missed.
pub fn fingerprint(path: &Path) -> io::Result<u64> {
    let mut hasher = DefaultHasher::new();
    let files = manifest_files(path).map_err(|e| match e {
        LoadError::Read { source, .. } => source,
        other => io::Error::other(other.to_string()),
    })?;
    for file in files {
        file.hash(&mut hasher);
        let meta = std::fs::metadata(&file)?;
        meta.len().hash(&mut hasher);
        meta.modified().ok().hash(&mut hasher);
        std::fs::read(&file)?.hash(&mut hasher);
    }
    Ok(hasher.finish())
}

fn has_extension(path: &Path, ext: &str) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case(ext))
}

/// The files `path` stands for: itself, or the manifest files of a directory, sorted.
fn manifest_files(path: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let read_err = |p: &Path| {
        let path = p.to_path_buf();
        move |source| LoadError::Read { path, source }
    };
    let meta = std::fs::metadata(path).map_err(read_err(path))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(read_err(path))? {
        let entry = entry.map_err(read_err(path))?;
        let file = entry.path();
        let hidden = entry
            .file_name()
            .to_str()
            .is_none_or(|n| n.starts_with('.'));
        if hidden
            || !["yaml", "yml", "json"]
                .iter()
                .any(|e| has_extension(&file, e))
        {
            continue;
        }
        // Follows symlinks: a ConfigMap's entries are symlinks to files.
        if std::fs::metadata(&file).map_err(read_err(&file))?.is_file() {
            files.push(file);
        }
    }
    files.sort();
    Ok(files)
}

/// Accumulates documents from any number of texts.
#[derive(Default)]
struct Reader {
    resources: Resources,
    rejected: Vec<ResourceStatus>,
    /// First source of every (kind, namespace, name), to reject later duplicates.
    seen: HashMap<ResourceRef, String>,
}

impl Reader {
    fn add_text(&mut self, text: &str, source: &str, json: bool) -> Result<(), LoadError> {
        let docs = if json {
            json_documents(text, source)?
        } else {
            yaml_documents(text, source)?
        };
        for (doc, index, line) in docs {
            let at = format!("{source}#{index}");
            self.add_document(doc, &at, line)?;
        }
        Ok(())
    }

    fn add_document(&mut self, mut doc: Value, at: &str, line: u64) -> Result<(), LoadError> {
        let fail = |message: String| LoadError::Document {
            at: if line > 0 {
                format!("{at} (line {line})")
            } else {
                at.to_owned()
            },
            message,
        };
        let Some(obj) = doc.as_object_mut() else {
            return Err(fail(
                "the document is not a mapping (a Kubernetes object)".into(),
            ));
        };
        strip_nulls(obj);
        let kind = match obj.get("kind") {
            Some(Value::String(k)) if !k.is_empty() => k.clone(),
            _ => return Err(fail("the document has no `kind`".into())),
        };
        let api_version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if kind == "List" || (kind.ends_with("List") && obj.contains_key("items")) {
            let items = match obj.remove("items") {
                Some(Value::Array(items)) => items,
                None => Vec::new(),
                Some(_) => return Err(fail(format!("`items` of a {kind} must be a list"))),
            };
            for (j, item) in items.into_iter().enumerate() {
                self.add_document(item, &format!("{at}.items[{j}]"), line)?;
            }
            return Ok(());
        }
        let meta = lenient_meta(obj.get("metadata"));
        let rref = ResourceRef::new(kind.as_str(), meta.namespace(), meta.name.clone());
        if let Some(first) = self.seen.get(&rref) {
            let message = format!("{rref}: duplicate of the one in {first}; this one is ignored");
            self.rejected.push(invalid(rref, at, message));
            return Ok(());
        }
        self.seen.insert(rref.clone(), at.to_owned());

        let (group, version) = api_version
            .rsplit_once('/')
            .unwrap_or(("", api_version.as_str()));
        let Some(known) = KnownKind::of(group, &kind) else {
            if read_verbatim(group, &kind) {
                tracing::debug!(source = at, resource = %rref, "kept verbatim (read by the builder)");
            } else {
                tracing::warn!(source = at, kind = %kind, api_version = %api_version, resource = %rref,
                    "skipping unknown kind (kept verbatim for extensions)");
            }
            self.resources.others.push(Sourced {
                source: at.to_owned(),
                resource: RawObject {
                    api_version,
                    kind,
                    metadata: meta,
                    body: doc,
                },
            });
            return Ok(());
        };
        if !known.versions().contains(&version) {
            let message = format!(
                "{rref}: apiVersion `{api_version}` is not supported (use {group}{}{})",
                if group.is_empty() { "" } else { "/" },
                known.versions().join(" or ")
            );
            self.rejected.push(invalid(rref, at, message));
            return Ok(());
        }
        let r = &mut self.resources;
        let result = match known {
            KnownKind::Gateway => typed(doc, at, &rref, &mut r.gateways),
            KnownKind::HttpRoute => typed(doc, at, &rref, &mut r.http_routes),
            KnownKind::GrpcRoute => typed(doc, at, &rref, &mut r.grpc_routes),
            KnownKind::TcpRoute => typed(doc, at, &rref, &mut r.tcp_routes),
            KnownKind::TlsRoute => typed(doc, at, &rref, &mut r.tls_routes),
            KnownKind::ReferenceGrant => typed(doc, at, &rref, &mut r.reference_grants),
            KnownKind::Service => typed(doc, at, &rref, &mut r.services),
            KnownKind::Secret => typed(doc, at, &rref, &mut r.secrets),
            KnownKind::EndpointSlice => typed(doc, at, &rref, &mut r.endpoint_slices),
            KnownKind::AuthorizationPolicy => typed(doc, at, &rref, &mut r.authorization_policies),
            KnownKind::RequestAuthentication => {
                typed(doc, at, &rref, &mut r.request_authentications)
            }
            KnownKind::ServiceEntry => typed(doc, at, &rref, &mut r.service_entries),
            KnownKind::DestinationRule => typed(doc, at, &rref, &mut r.destination_rules),
        };
        if let Err(status) = result {
            self.rejected.push(status);
        }
        Ok(())
    }

    fn finish(self, cache: &EndpointStatsCache) -> Config {
        build(self.resources, self.rejected, cache)
    }
}

/// Deserializes `doc` as `T` into `into`, or explains, with the field path, why it cannot.
fn typed<T: DeserializeOwned>(
    doc: Value,
    at: &str,
    rref: &ResourceRef,
    into: &mut Vec<Sourced<T>>,
) -> Result<(), ResourceStatus> {
    match serde_path_to_error::deserialize::<_, T>(doc) {
        Ok(resource) => {
            into.push(Sourced {
                source: at.to_owned(),
                resource,
            });
            Ok(())
        }
        Err(e) => {
            let path = e.path().to_string();
            let message = if path == "." {
                format!("{rref}: {}", e.inner())
            } else {
                format!("{rref}: {path}: {}", e.inner())
            };
            Err(invalid(rref.clone(), at, message))
        }
    }
}

/// The kinds waypoint interprets, by API group.
#[derive(Clone, Copy)]
enum KnownKind {
    Gateway,
    HttpRoute,
    GrpcRoute,
    TcpRoute,
    TlsRoute,
    ReferenceGrant,
    Service,
    Secret,
    EndpointSlice,
    AuthorizationPolicy,
    RequestAuthentication,
    ServiceEntry,
    DestinationRule,
}

impl KnownKind {
    fn of(group: &str, kind: &str) -> Option<KnownKind> {
        Some(match (group, kind) {
            (GATEWAY_API_GROUP, "Gateway") => KnownKind::Gateway,
            (GATEWAY_API_GROUP, "HTTPRoute") => KnownKind::HttpRoute,
            (GATEWAY_API_GROUP, "GRPCRoute") => KnownKind::GrpcRoute,
            (GATEWAY_API_GROUP, "TCPRoute") => KnownKind::TcpRoute,
            (GATEWAY_API_GROUP, "TLSRoute") => KnownKind::TlsRoute,
            (GATEWAY_API_GROUP, "ReferenceGrant") => KnownKind::ReferenceGrant,
            ("", "Service") => KnownKind::Service,
            ("", "Secret") => KnownKind::Secret,
            ("discovery.k8s.io", "EndpointSlice") => KnownKind::EndpointSlice,
            ("security.istio.io", "AuthorizationPolicy") => KnownKind::AuthorizationPolicy,
            ("security.istio.io", "RequestAuthentication") => KnownKind::RequestAuthentication,
            (ISTIO_NETWORKING_GROUP, "ServiceEntry") => KnownKind::ServiceEntry,
            ("networking.istio.io", "DestinationRule") => KnownKind::DestinationRule,
            _ => return None,
        })
    }

    /// The versions whose schema these types read (older versions are field-compatible).
    fn versions(self) -> &'static [&'static str] {
        match self {
            KnownKind::Gateway | KnownKind::HttpRoute => &["v1", "v1beta1"],
            KnownKind::GrpcRoute | KnownKind::TcpRoute => &["v1", "v1alpha2"],
            KnownKind::TlsRoute => &["v1", "v1alpha3", "v1alpha2"],
            KnownKind::ReferenceGrant => &["v1", "v1beta1", "v1alpha2"],
            KnownKind::Service | KnownKind::Secret | KnownKind::EndpointSlice => &["v1"],
            KnownKind::AuthorizationPolicy | KnownKind::RequestAuthentication => &["v1", "v1beta1"],
            KnownKind::ServiceEntry => &["v1", "v1beta1", "v1alpha3"],
            KnownKind::DestinationRule => &["v1", "v1beta1", "v1alpha3"],
        }
    }
}

/// Kinds the builder reads from the verbatim objects (Namespaces and Pods for mesh membership,
/// GatewayClasses for binding): expected, so not worth a warning. The Kubernetes source sends
/// every one of them on every rebuild, where a warning per object would drown the log.
fn read_verbatim(group: &str, kind: &str) -> bool {
    matches!(
        (group, kind),
        ("", "Namespace") | ("", "Pod") | (GATEWAY_API_GROUP, "GatewayClass")
    )
}

/// The name and namespace of a document even when the rest of its metadata is malformed, so a
/// rejection can still say which resource it is.
fn lenient_meta(meta: Option<&Value>) -> ObjectMeta {
    if let Some(m) = meta.and_then(|m| serde_json::from_value::<ObjectMeta>(m.clone()).ok()) {
        return m;
    }
    let get = |k: &str| {
        meta.and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    ObjectMeta {
        name: get("name").unwrap_or_default(),
        namespace: get("namespace"),
        ..Default::default()
    }
}

/// Kubernetes prunes null fields before defaulting (`matches:` with no value means absent);
/// doing the same lets serde defaults apply to them.
fn strip_nulls(obj: &mut Map<String, Value>) {
    obj.retain(|_, v| !v.is_null());
    for v in obj.values_mut() {
        strip_nulls_in(v);
    }
}

fn strip_nulls_in(v: &mut Value) {
    match v {
        Value::Object(o) => strip_nulls(o),
        Value::Array(items) => items.iter_mut().for_each(strip_nulls_in),
        _ => {}
    }
}

/// The non-empty documents of a YAML text, each with its index and the line it starts on.
fn yaml_documents(text: &str, source: &str) -> Result<Vec<(Value, usize, u64)>, LoadError> {
    let mut options = serde_saphyr::Options::default();
    // We name the file and line ourselves; the snippet would repeat the input in every error.
    options.with_snippet = false;
    // YAML 1.2 booleans only: under YAML 1.1 rules `namespace: n` or `name: no` would turn
    // into `false` and fail with a baffling type error.
    options.strict_booleans = true;
    // The default budget guards against hostile input; manifests are the operator's, and a
    // cluster's worth of EndpointSlices in one file passes the default 1,024 documents.
    let mut budget = serde_saphyr::Budget::default();
    budget.max_documents = 1_000_000;
    budget.max_nodes = 50_000_000;
    budget.max_events = 200_000_000;
    options.budget = Some(budget);
    let docs: Vec<serde_saphyr::Spanned<Value>> =
        serde_saphyr::from_multiple_with_options(text, options).map_err(|e| {
            let at = match e.location() {
                Some(l) if l.line() > 0 => format!("{source} line {}", l.line()),
                _ => source.to_owned(),
            };
            LoadError::Syntax {
                at,
                message: e.to_string(),
            }
        })?;
    let starts = DocumentStarts::of(text);
    Ok(docs
        .into_iter()
        .map(|d| {
            let line = d.referenced.line();
            (d.value, starts.index_at(line), line)
        })
        .collect())
}

/// Where the documents of a YAML text begin, so that a document keeps its position (`#3` =
/// third document) even when the parser skipped empty ones before it.
struct DocumentStarts {
    /// Lines (1-based) holding a `---` marker.
    markers: Vec<u64>,
    /// Whether the first document begins with `---` (else it begins implicitly).
    first_explicit: bool,
}

impl DocumentStarts {
    fn of(text: &str) -> Self {
        let mut markers = Vec::new();
        let mut seen_content = false;
        let mut first_explicit = false;
        for (i, line) in text.lines().enumerate() {
            let marker = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
            if marker {
                if markers.is_empty() && !seen_content {
                    first_explicit = true;
                }
                markers.push(i as u64 + 1);
            } else {
                let t = line.trim_start();
                seen_content |= !(t.is_empty() || t.starts_with('#') || t.starts_with('%'));
            }
        }
        DocumentStarts {
            markers,
            first_explicit,
        }
    }

    /// The 1-based index of the document whose root node is on `line`.
    fn index_at(&self, line: u64) -> usize {
        let before = self.markers.iter().take_while(|&&m| m <= line).count();
        if self.first_explicit {
            before.max(1)
        } else {
            before + 1
        }
    }
}

/// The values of a JSON text (one object, or several in a row), each with its index and line.
fn json_documents(text: &str, source: &str) -> Result<Vec<(Value, usize, u64)>, LoadError> {
    let mut docs = Vec::new();
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    loop {
        let start = stream.byte_offset();
        match stream.next() {
            None => return Ok(docs),
            Some(Ok(v)) => {
                let skipped = text.get(..start).unwrap_or("");
                let ws = text[start..].len() - text[start..].trim_start().len();
                let line = skipped.lines().count().max(1) as u64
                    + text[start..start + ws].matches('\n').count() as u64;
                docs.push((v, docs.len() + 1, line));
            }
            Some(Err(e)) => {
                return Err(LoadError::Syntax {
                    at: format!("{source} line {}", e.line()),
                    message: e.to_string(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> EndpointStatsCache {
        EndpointStatsCache::default()
    }

    #[test]
    fn yaml_syntax_errors_name_the_file_and_line() {
        let text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n---\nkind: [\n";
        let err = parse_manifests_with(text, "x.yaml", &cache()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, LoadError::Syntax { .. }), "{msg}");
        assert!(msg.starts_with("x.yaml line "), "{msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");
    }

    #[test]
    fn document_indexes_count_empty_documents() {
        let text = "---\nkind: A\n---\n# nothing\n---\n\nkind: B\n...\n--- {kind: C}\n";
        let starts = DocumentStarts::of(text);
        assert_eq!([2, 7, 9].map(|l| starts.index_at(l)), [1, 3, 4]);
        let starts = DocumentStarts::of("# c\nkind: A\n---\nkind: B\n");
        assert_eq!([2, 4].map(|l| starts.index_at(l)), [1, 2]);
    }

    #[test]
    fn documents_without_kind_fail_the_load() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\napiVersion: v1\nmetadata: {name: b}\n";
        let msg = parse_manifests_with(text, "x.yaml", &cache())
            .unwrap_err()
            .to_string();
        assert_eq!(msg, "x.yaml#2 (line 5): the document has no `kind`");
        let msg = parse_manifests_with("- a\n- b\n", "y.yaml", &cache())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("not a mapping"), "{msg}");
    }

    #[test]
    fn lists_expand_and_nulls_mean_absent() {
        let text = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: a, namespace: ns}
  spec: {ports: [{port: 80}]}
- apiVersion: gateway.networking.k8s.io/v1
  kind: HTTPRoute
  metadata: {name: r}
  spec:
    rules:
    - matches:
      backendRefs: [{name: a, port: 80, weight: null}]
"#;
        let config = parse_manifests_with(text, "l.yaml", &cache()).unwrap();
        assert_eq!(config.resources.services.len(), 1);
        assert_eq!(config.resources.services[0].source, "l.yaml#1.items[0]");
        let route = &config.resources.http_routes[0];
        assert_eq!(route.spec.rules[0].matches.len(), 1);
        assert_eq!(route.spec.rules[0].backend_refs[0].weight, 1);
    }

    #[test]
    fn json_files_load_several_objects() {
        let text = "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"a\"}}\n\n\t{\"kind\":1}";
        let err = Reader::default()
            .add_text(text, "j.json", true)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "j.json#2 (line 3): the document has no `kind`"
        );
    }

    #[test]
    fn unsupported_versions_are_rejected_by_name() {
        // `n` is also a YAML 1.1 boolean: it must stay a namespace name.
        let text = "apiVersion: gateway.networking.k8s.io/v9\nkind: HTTPRoute\nmetadata: {name: r, namespace: n}\n";
        let config = parse_manifests_with(text, "v.yaml", &cache()).unwrap();
        assert!(config.resources.http_routes.is_empty());
        let status = &config.statuses[0];
        assert!(!status.is_ok());
        assert_eq!(
            status.conditions[0].message,
            "HTTPRoute n/r: apiVersion `gateway.networking.k8s.io/v9` is not supported \
             (use gateway.networking.k8s.io/v1 or v1beta1)"
        );
    }
}
