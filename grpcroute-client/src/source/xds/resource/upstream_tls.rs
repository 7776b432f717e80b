//! CDS `transport_socket`: TLS to a cluster's endpoints with certificates from the
//! bootstrap's certificate-provider instances (gRFC A29).
//!
//! gRPC reads only the `CertificateProviderPluginInstance` ways of naming certificates
//! (the CA instance is required, the identity instance makes it mutual TLS) and the
//! `match_subject_alt_names` matchers. A29 lets a client ignore the other fields; this
//! client NACKs every such field that is set, as C-core does for the validation settings
//! it cannot honour (`verify_certificate_hash`, `crl`, ...) and as issue 12 asks of the
//! rest (`sni`, `allow_renegotiation`, `tls_params`, ...): a cluster whose security the
//! client would silently weaken or change is rejected with the field named instead.

use std::collections::BTreeSet;

use envoy_types::pb::{
    envoy::{
        config::core::v3::{TransportSocket, transport_socket::ConfigType},
        extensions::transport_sockets::tls::v3::{
            CertificateProviderPluginInstance, CertificateValidationContext, CommonTlsContext,
            UpstreamTlsContext,
            certificate_validation_context::TrustChainVerification,
            common_tls_context::{CertificateProviderInstance, ValidationContextType},
        },
    },
    google::protobuf::Any,
};
use prost::{Message, Name};

use super::{Validator, route::string_matcher};
use crate::model::xds::cluster::UpstreamTls;

/// What validation needs from the bootstrap: the certificate-provider instance names a
/// resource may refer to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CertificateProviderNames(pub(crate) BTreeSet<String>);

/// Validates a cluster's `transport_socket` (the validator is at `transport_socket`).
pub(crate) fn transport_socket(
    v: &mut Validator,
    socket: &TransportSocket,
    providers: &CertificateProviderNames,
) -> Option<UpstreamTls> {
    let Some(ConfigType::TypedConfig(any)) = &socket.config_type else {
        v.error_at("typed_config", "field not present");
        return None;
    };
    v.field("typed_config", |v| typed_config(v, any, providers))
}

fn typed_config(
    v: &mut Validator,
    any: &Any,
    providers: &CertificateProviderNames,
) -> Option<UpstreamTls> {
    if any.type_url != UpstreamTlsContext::type_url() {
        v.error(format!(
            "unsupported transport socket type {}",
            any.type_url
        ));
        return None;
    }
    let context = match UpstreamTlsContext::decode(any.value.as_slice()) {
        Ok(c) => c,
        Err(e) => {
            v.error(format!("cannot decode UpstreamTlsContext: {e}"));
            return None;
        }
    };
    // SNI is A101's, not A29's: honouring it half (sending it without checking the SAN
    // against it) would differ from a client that implements it.
    if !context.sni.is_empty() {
        v.error_at("sni", "setting SNI is not supported");
    }
    if context.auto_host_sni {
        v.error_at("auto_host_sni", "setting SNI is not supported");
    }
    if context.auto_sni_san_validation {
        v.error_at(
            "auto_sni_san_validation",
            "SNI SAN validation is not supported",
        );
    }
    if context.allow_renegotiation {
        v.error_at("allow_renegotiation", "TLS renegotiation is not supported");
    }
    let Some(common) = &context.common_tls_context else {
        v.error_at(
            "common_tls_context",
            "no CA certificate provider instance configured",
        );
        return None;
    };
    v.field("common_tls_context", |v| {
        common_tls_context(v, common, providers)
    })
}

fn common_tls_context(
    v: &mut Validator,
    common: &CommonTlsContext,
    providers: &CertificateProviderNames,
) -> Option<UpstreamTls> {
    let errors = v.error_count();
    let unsupported = |v: &mut Validator, field: &str| v.error_at(field, "unsupported");
    if common.tls_params.is_some() {
        unsupported(v, "tls_params");
    }
    if common.custom_handshaker.is_some() {
        unsupported(v, "custom_handshaker");
    }
    if common.key_log.is_some() {
        unsupported(v, "key_log");
    }
    if common.custom_tls_certificate_selector.is_some() {
        unsupported(v, "custom_tls_certificate_selector");
    }
    if !common.tls_certificates.is_empty() {
        unsupported(v, "tls_certificates");
    }
    if !common.tls_certificate_sds_secret_configs.is_empty() {
        unsupported(v, "tls_certificate_sds_secret_configs");
    }
    #[allow(deprecated)]
    let (old_provider, old_instance) = (
        &common.tls_certificate_certificate_provider,
        &common.tls_certificate_certificate_provider_instance,
    );
    if old_provider.is_some() {
        unsupported(v, "tls_certificate_certificate_provider");
    }
    // The current field first, then the deprecated one (as C-core reads them).
    let identity_instance = match (&common.tls_certificate_provider_instance, old_instance) {
        (Some(i), _) => v.field("tls_certificate_provider_instance", |v| {
            plugin_instance(v, i, providers)
        }),
        (None, Some(i)) => v.field("tls_certificate_certificate_provider_instance", |v| {
            legacy_instance(v, i, providers)
        }),
        (None, None) => None,
    };
    let mut ca_instance = None;
    let mut san_matchers = Vec::new();
    #[allow(deprecated)]
    match &common.validation_context_type {
        Some(ValidationContextType::ValidationContext(cvc)) => {
            v.field("validation_context", |v| {
                validation_context(v, cvc, providers, &mut ca_instance, &mut san_matchers);
            });
        }
        Some(ValidationContextType::CombinedValidationContext(combined)) => {
            v.field("combined_validation_context", |v| {
                if let Some(cvc) = &combined.default_validation_context {
                    v.field("default_validation_context", |v| {
                        validation_context(v, cvc, providers, &mut ca_instance, &mut san_matchers);
                    });
                }
                if combined.validation_context_sds_secret_config.is_some() {
                    unsupported(v, "validation_context_sds_secret_config");
                }
                if combined.validation_context_certificate_provider.is_some() {
                    unsupported(v, "validation_context_certificate_provider");
                }
                // The A29 field, read when the default context names no CA instance.
                if let Some(i) = &combined.validation_context_certificate_provider_instance
                    && ca_instance.is_none()
                {
                    ca_instance = v
                        .field("validation_context_certificate_provider_instance", |v| {
                            legacy_instance(v, i, providers)
                        });
                }
            });
        }
        Some(ValidationContextType::ValidationContextCertificateProviderInstance(i)) => {
            ca_instance = v.field("validation_context_certificate_provider_instance", |v| {
                legacy_instance(v, i, providers)
            });
        }
        Some(ValidationContextType::ValidationContextSdsSecretConfig(_)) => {
            unsupported(v, "validation_context_sds_secret_config");
        }
        Some(ValidationContextType::ValidationContextCertificateProvider(_)) => {
            unsupported(v, "validation_context_certificate_provider");
        }
        None => {}
    }
    let Some(ca_instance) = ca_instance else {
        if v.error_count() == errors {
            v.error("no CA certificate provider instance configured");
        }
        return None;
    };
    (v.error_count() == errors).then_some(UpstreamTls {
        ca_instance,
        identity_instance,
        san_matchers,
    })
}

fn validation_context(
    v: &mut Validator,
    cvc: &CertificateValidationContext,
    providers: &CertificateProviderNames,
    ca_instance: &mut Option<String>,
    san_matchers: &mut Vec<crate::model::xds::route::StringMatch>,
) {
    let unsupported = |v: &mut Validator, field: &str| v.error_at(field, "unsupported");
    if let Some(i) = &cvc.ca_certificate_provider_instance {
        *ca_instance = v.field("ca_certificate_provider_instance", |v| {
            plugin_instance(v, i, providers)
        });
    }
    // Deprecated by Envoy for `match_typed_subject_alt_names`, but the field gRPC reads
    // (A29): any SAN of any type is matched.
    #[allow(deprecated)]
    let matchers = &cvc.match_subject_alt_names;
    for (i, m) in matchers.iter().enumerate() {
        if let Some(m) = v.field(format!("match_subject_alt_names[{i}]"), |v| {
            string_matcher(v, m)
        }) {
            san_matchers.push(m);
        }
    }
    if cvc.trusted_ca.is_some() {
        unsupported(v, "trusted_ca");
    }
    if cvc.watched_directory.is_some() {
        unsupported(v, "watched_directory");
    }
    if cvc.system_root_certs.is_some() {
        unsupported(v, "system_root_certs");
    }
    if !cvc.verify_certificate_spki.is_empty() {
        unsupported(v, "verify_certificate_spki");
    }
    if !cvc.verify_certificate_hash.is_empty() {
        unsupported(v, "verify_certificate_hash");
    }
    if !cvc.match_typed_subject_alt_names.is_empty() {
        unsupported(v, "match_typed_subject_alt_names");
    }
    if cvc
        .require_signed_certificate_timestamp
        .is_some_and(|b| b.value)
    {
        unsupported(v, "require_signed_certificate_timestamp");
    }
    if cvc.crl.is_some() {
        unsupported(v, "crl");
    }
    if cvc.custom_validator_config.is_some() {
        unsupported(v, "custom_validator_config");
    }
    if cvc.allow_expired_certificate {
        unsupported(v, "allow_expired_certificate");
    }
    if cvc.trust_chain_verification != TrustChainVerification::VerifyTrustChain as i32 {
        unsupported(v, "trust_chain_verification");
    }
    if cvc.max_verify_depth.is_some() {
        unsupported(v, "max_verify_depth");
    }
}

fn plugin_instance(
    v: &mut Validator,
    i: &CertificateProviderPluginInstance,
    providers: &CertificateProviderNames,
) -> Option<String> {
    instance_name(v, &i.instance_name, providers)
}

fn legacy_instance(
    v: &mut Validator,
    i: &CertificateProviderInstance,
    providers: &CertificateProviderNames,
) -> Option<String> {
    instance_name(v, &i.instance_name, providers)
}

/// The instance must be one the bootstrap defines (A29; `certificate_name` is not
/// used by the `file_watcher` plugin, which has one certificate).
fn instance_name(
    v: &mut Validator,
    name: &str,
    providers: &CertificateProviderNames,
) -> Option<String> {
    if providers.0.contains(name) {
        Some(name.to_string())
    } else {
        v.error_at(
            "instance_name",
            format!("unrecognized certificate provider instance name: {name:?}"),
        );
        None
    }
}
