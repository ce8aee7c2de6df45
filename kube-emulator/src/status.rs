//! Failures as the API server reports them: an HTTP status and a `Status` object whose
//! `reason` a client switches on (`NotFound`, `AlreadyExists`, `Conflict`, `Expired`, ...).

use serde_json::{Value, json};

/// A failed request, answered as a Kubernetes `Status` object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ApiError {
    /// HTTP status code.
    pub(crate) code: u16,
    /// The `Status.reason`.
    pub(crate) reason: &'static str,
    /// The `Status.message`.
    pub(crate) message: String,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String) -> ApiError {
        ApiError {
            code,
            reason,
            message,
        }
    }

    /// 404 for an object (`resource` is `plural.group`).
    pub(crate) fn not_found(resource: &str, name: &str) -> ApiError {
        Self::new(404, "NotFound", format!("{resource} \"{name}\" not found"))
    }

    /// 404 for a URL no resource type is served at.
    pub(crate) fn no_resource() -> ApiError {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource".to_owned(),
        )
    }

    /// 409 on create of an existing object.
    pub(crate) fn already_exists(resource: &str, name: &str) -> ApiError {
        Self::new(
            409,
            "AlreadyExists",
            format!("{resource} \"{name}\" already exists"),
        )
    }

    /// 409 on a write whose `resourceVersion` is stale.
    pub(crate) fn conflict(resource: &str, name: &str) -> ApiError {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {resource} \"{name}\": the object has been \
                 modified; please apply your changes to the latest version and try again"
            ),
        )
    }

    /// 410: the history a watch (or a continue token) needs was compacted away.
    pub(crate) fn expired(message: String) -> ApiError {
        Self::new(410, "Expired", message)
    }

    /// 400 for a body the request cannot be applied with.
    pub(crate) fn bad_request(message: String) -> ApiError {
        Self::new(400, "BadRequest", message)
    }

    /// 401 without the expected bearer token.
    pub(crate) fn unauthorized() -> ApiError {
        Self::new(401, "Unauthorized", "Unauthorized".to_owned())
    }

    /// 503 while the emulator plays an unavailable server.
    pub(crate) fn unavailable() -> ApiError {
        Self::new(
            503,
            "ServiceUnavailable",
            "the API server is unavailable (emulated outage)".to_owned(),
        )
    }

    /// 405 for a verb the URL does not take.
    pub(crate) fn method_not_allowed(method: &str) -> ApiError {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource: {method}"),
        )
    }

    /// 415 for a patch type the emulator does not implement.
    pub(crate) fn unsupported_media_type(content_type: &str) -> ApiError {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types \
                 include: application/merge-patch+json (got {content_type:?})"
            ),
        )
    }

    /// The `Status` object.
    pub(crate) fn to_status(&self) -> Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        })
    }
}
