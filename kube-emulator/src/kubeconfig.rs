//! The kubeconfig a client (the real `waypoint` binary) reads to find the emulator: one
//! cluster, one user, one context, current. Written as YAML by hand: the shape is fixed and
//! every value is either ours (URL, base64) or quoted as a JSON string, which YAML reads as is.

use base64::Engine as _;
use serde_json::json;

/// The kubeconfig text for a server at `url`, trusting `ca_pem` when given, authenticating
/// with `token` when given.
pub(crate) fn render(url: &str, ca_pem: Option<&str>, token: Option<&str>) -> String {
    let quoted = |s: &str| json!(s).to_string();
    let mut cluster = format!("    server: {}\n", quoted(url));
    if let Some(ca) = ca_pem {
        let data = base64::engine::general_purpose::STANDARD.encode(ca);
        cluster.push_str(&format!("    certificate-authority-data: {data}\n"));
    }
    let user = match token {
        Some(token) => format!("    token: {}\n", quoted(token)),
        None => "    {}\n".to_owned(),
    };
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: emulator\n\
         \x20 cluster:\n\
         {cluster}\
         users:\n\
         - name: emulator\n\
         \x20 user:\n\
         {user}\
         contexts:\n\
         - name: emulator\n\
         \x20 context:\n\
         \x20   cluster: emulator\n\
         \x20   user: emulator\n\
         current-context: emulator\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubeconfig_names_server_ca_and_token() {
        let text = render("https://127.0.0.1:1234", Some("PEM"), Some("s3cret"));
        let doc: serde_json::Value = serde_saphyr::from_str(&text).expect("valid YAML");
        assert_eq!(doc["current-context"], "emulator");
        assert_eq!(
            doc["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:1234"
        );
        assert_eq!(
            doc["clusters"][0]["cluster"]["certificate-authority-data"],
            "UEVN"
        );
        assert_eq!(doc["users"][0]["user"]["token"], "s3cret");
        assert_eq!(doc["contexts"][0]["context"]["cluster"], "emulator");

        let plain: serde_json::Value =
            serde_saphyr::from_str(&render("http://127.0.0.1:1", None, None)).expect("YAML");
        assert!(
            plain["users"][0]["user"]
                .as_object()
                .is_some_and(|u| u.is_empty())
        );
        assert!(
            plain["clusters"][0]["cluster"]
                .get("certificate-authority-data")
                .is_none()
        );
    }
}
