//! The files of `deploy/` as the tests read them: every YAML document as a JSON value, with the
//! file it came from.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The repository's `deploy/` directory.
pub(crate) fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// The documents of one YAML file (empty and comment-only documents skipped), read the way the
/// API server reads them (YAML 1.2: `no` is a string).
pub(crate) fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    let documents: Vec<Value> = serde_saphyr::from_multiple_with_options(&text, options)
        .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
    documents.into_iter().filter(|d| !d.is_null()).collect()
}

/// The `*.yaml` files directly in `dir`, sorted by name (the order `kubectl apply -f dir`
/// uses).
pub(crate) fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// Every document of every `*.yaml` file directly in `dir`, in `kubectl apply` order.
pub(crate) fn documents_in(dir: &Path) -> Vec<Value> {
    yaml_files(dir).iter().flat_map(|f| documents(f)).collect()
}

/// What `kubectl apply -f deploy/` installs.
pub(crate) fn plain_manifests() -> Vec<Value> {
    documents_in(&deploy_dir())
}

/// The chart rendered by Helm for `scenario` (`deploy/helm/render.py` says what each sets).
pub(crate) fn helm_rendering(scenario: &str) -> Vec<Value> {
    documents(&deploy_dir().join(format!("helm/rendered/{scenario}.yaml")))
}

/// The one object of `kind` named `name` among `objects`.
pub(crate) fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let mut found = objects
        .iter()
        .filter(|o| o["kind"] == kind && o["metadata"]["name"] == name);
    let object = found
        .next()
        .unwrap_or_else(|| panic!("no {kind} {name} among the manifests"));
    assert!(found.next().is_none(), "two objects {kind} {name}");
    object
}
