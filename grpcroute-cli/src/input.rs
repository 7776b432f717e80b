//! Reading the `-f` manifests into a mesh, remembering which file each object came from so
//! that every error can name its file.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use grpcroute_client::{
    InvalidObject, Mesh, ObjectKey, ObjectKind, Resources,
    manifest::{self, ManifestError},
};

use crate::{InputError, args::MeshArgs};

/// The manifests, read.
#[derive(Debug, Default)]
pub(crate) struct Inputs {
    /// Every object that could be read.
    pub(crate) resources: Resources,
    /// Documents that could not be read.
    pub(crate) errors: Vec<ManifestError>,
    /// The file each object was read from.
    origins: HashMap<(ObjectKind, ObjectKey), PathBuf>,
}

impl Inputs {
    /// Reads every `-f` path. A path that does not exist, or a folder without manifests,
    /// is an input error; documents that cannot be read are collected in `errors`.
    pub(crate) fn load(paths: &[PathBuf]) -> Result<Self, InputError> {
        let mut inputs = Self::default();
        for path in paths {
            if let Err(e) = std::fs::metadata(path) {
                return Err(InputError(format!("-f {}: {e}", path.display())));
            }
            // Listing the path reads its files once; each is then read on its own so that
            // its objects can be traced back to it.
            let listed = manifest::load(std::slice::from_ref(path));
            if listed.files.is_empty() {
                if let Some(e) = listed.errors.into_iter().next() {
                    return Err(InputError(e.to_string()));
                }
                return Err(InputError(format!(
                    "-f {}: no manifest files (*.yaml, *.yml, *.json)",
                    path.display()
                )));
            }
            for file in &listed.files {
                let loaded = manifest::load(std::slice::from_ref(file));
                inputs.note_origins(&loaded.resources, file);
                inputs.resources.extend(loaded.resources);
                inputs.errors.extend(loaded.errors);
            }
        }
        Ok(inputs)
    }

    fn note_origins(&mut self, r: &Resources, file: &Path) {
        let mut note = |kind, meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            let key = ObjectKey::new(
                meta.namespace.as_deref().unwrap_or("default"),
                meta.name.as_deref().unwrap_or_default(),
            );
            self.origins
                .entry((kind, key))
                .or_insert_with(|| file.to_path_buf());
        };
        r.routes
            .iter()
            .for_each(|o| note(ObjectKind::GrpcRoute, &o.metadata));
        r.services
            .iter()
            .for_each(|o| note(ObjectKind::Service, &o.metadata));
        r.endpoint_slices
            .iter()
            .for_each(|o| note(ObjectKind::EndpointSlice, &o.metadata));
        r.reference_grants
            .iter()
            .for_each(|o| note(ObjectKind::ReferenceGrant, &o.metadata));
    }

    /// The file an invalid object was read from.
    pub(crate) fn origin(&self, invalid: &InvalidObject) -> Option<&Path> {
        self.origins
            .get(&(invalid.kind(), invalid.key().clone()))
            .map(PathBuf::as_path)
    }

    /// Fails with the first unreadable document (for commands that need every object).
    pub(crate) fn require_readable(&self) -> Result<(), InputError> {
        match self.errors.as_slice() {
            [] => Ok(()),
            [only] => Err(InputError(only.to_string())),
            [first, rest @ ..] => Err(InputError(format!(
                "{first} (and {} more unreadable document{})",
                rest.len(),
                if rest.len() == 1 { "" } else { "s" }
            ))),
        }
    }

    /// A mesh holding these objects, as a client in `args.from_namespace` sees it, and the
    /// objects it rejected.
    pub(crate) fn mesh(&self, args: &MeshArgs) -> (Mesh, Vec<InvalidObject>) {
        // BackendTLSPolicies in the manifests apply, as in a client whose mode lets them
        // (`TlsMode::Policy`): `explain` shows them, `call` connects as they say.
        let mesh = Mesh::builder()
            .namespace(&args.from_namespace)
            .cluster_domain(&args.cluster_domain)
            .report_routing(true)
            .tls(grpcroute_client::tls::TlsMode::Policy)
            .build();
        let report = mesh.update(&self.resources);
        (mesh, report.rejected)
    }

    /// One line per rejected object on stderr: the call still goes ahead without it, as it
    /// would in a client.
    pub(crate) fn warn_rejected(&self, rejected: &[InvalidObject]) {
        for invalid in rejected {
            let file = self
                .origin(invalid)
                .map_or_else(String::new, |p| format!("{}: ", p.display()));
            eprintln!(
                "grpcroute: warning: {file}{} (the object is left out)",
                crate::output::one_line(&invalid.to_string())
            );
        }
    }
}
