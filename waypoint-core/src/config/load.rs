//! Reading manifests (placeholder: being written).

/// Why manifests could not be read at all.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LoadError(pub String);

/// Loads a file or directory of manifests.
pub fn load_path(_path: &std::path::Path) -> Result<super::Config, LoadError> {
    Err(LoadError("not yet".into()))
}

/// Parses manifests from a string.
pub fn parse_manifests(_text: &str, _source: &str) -> Result<super::Config, LoadError> {
    Err(LoadError("not yet".into()))
}
