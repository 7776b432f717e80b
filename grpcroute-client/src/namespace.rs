//! The namespace the client runs in: it decides which consumer routes apply and where a
//! bare `svc` name resolves.

use std::path::Path;

/// Where Kubernetes mounts the service account's namespace in every pod.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// `POD_NAMESPACE` (set from the downward API), else the service-account namespace file,
/// else `default`.
pub(crate) fn detect() -> String {
    from_sources(
        std::env::var("POD_NAMESPACE").ok(),
        Path::new(SERVICE_ACCOUNT_NAMESPACE),
    )
}

fn from_sources(env: Option<String>, file: &Path) -> String {
    env.map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string(file)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "default".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_then_file_then_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("namespace");
        assert_eq!(from_sources(None, &file), "default");
        std::fs::write(&file, "shop\n").unwrap();
        assert_eq!(from_sources(None, &file), "shop");
        assert_eq!(from_sources(Some("web".into()), &file), "web");
        assert_eq!(
            from_sources(Some(" ".into()), &file),
            "shop",
            "blank env falls through"
        );
    }
}
