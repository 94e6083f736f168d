//! TLS for the server's outbound HTTPS (the identity provider's keys and token endpoint,
//! client metadata documents): rustls on aws-lc, the web PKI's roots unless `roots`
//! names others.

use std::sync::Arc;

use ureq::tls::{RootCerts, TlsConfig, TlsProvider};

pub fn client_config(roots: Option<RootCerts>) -> TlsConfig {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(provider);
    if let Some(roots) = roots {
        tls = tls.root_certs(roots);
    }
    tls.build()
}
