//! TLS to PostgreSQL, with the meanings libpq gives `sslmode` and
//! `sslrootcert`, over rustls.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rota_core::StoreError;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// How a store's connections use TLS: the URL's `sslmode`, as libpq reads it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsMode {
    /// `disable`: never.
    Disable,
    /// `prefer` (the default; `allow` reads the same): TLS when the server
    /// offers it, else none; the server's certificate is not checked.
    #[default]
    Prefer,
    /// `require`: TLS or no connection. The certificate is checked as under
    /// `verify-ca` when `sslrootcert` is given, else not at all: the link is
    /// encrypted, but the server is not authenticated.
    Require,
    /// `verify-ca`: TLS, with a certificate that chains to a trusted root.
    VerifyCa,
    /// `verify-full`: as `verify-ca`, and the certificate names the host
    /// connected to.
    VerifyFull,
}

/// The TLS settings of a PostgreSQL store URL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PgTls {
    /// `sslmode`.
    pub mode: TlsMode,
    /// `sslrootcert`: a PEM file of the certificates trusted to sign the
    /// server's; without it (or with `system`) the system's roots.
    pub root: Option<PathBuf>,
}

impl PgTls {
    /// Reads a URL parameter that concerns TLS; `Ok(false)` for any other.
    ///
    /// # Errors
    /// An unknown `sslmode`, or client certificates (`sslcert`, `sslkey`),
    /// which are not supported.
    pub(super) fn option(&mut self, key: &str, value: &str) -> Result<bool, StoreError> {
        match key {
            "sslmode" => {
                self.mode = match value {
                    "disable" => TlsMode::Disable,
                    "allow" | "prefer" => TlsMode::Prefer,
                    "require" => TlsMode::Require,
                    "verify-ca" => TlsMode::VerifyCa,
                    "verify-full" => TlsMode::VerifyFull,
                    other => {
                        return Err(StoreError::Invalid {
                            message: format!(
                                "sslmode must be disable, allow, prefer, require, verify-ca or \
                                 verify-full, not '{other}'"
                            ),
                        });
                    }
                };
            }
            "sslrootcert" => {
                self.root = (!value.is_empty() && value != "system").then(|| PathBuf::from(value));
                if value == "system" && self.mode != TlsMode::Disable {
                    // As libpq 16: the system's roots imply a full check.
                    self.mode = TlsMode::VerifyFull;
                }
            }
            "sslcert" | "sslkey" | "sslpassword" => {
                return Err(StoreError::Invalid {
                    message: format!(
                        "client certificates ('{key}') are not supported by the PostgreSQL \
                         store; authenticate with a password"
                    ),
                });
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The client's own `sslmode`: whether TLS is tried, and insisted on.
    pub(super) fn client_mode(&self) -> SslMode {
        match self.mode {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => SslMode::Require,
        }
    }

    /// The connector every connection of the store is opened with.
    ///
    /// # Errors
    /// When the root certificates cannot be read, or none can be found.
    pub(super) fn connector(&self) -> Result<MakeRustlsConnect, StoreError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::Invalid {
                message: format!("TLS to PostgreSQL: {e}"),
            })?;
        let check = match (self.mode, &self.root) {
            (TlsMode::Disable | TlsMode::Prefer, _) | (TlsMode::Require, None) => Check::Nothing,
            (TlsMode::Require | TlsMode::VerifyCa, _) => Check::Chain,
            (TlsMode::VerifyFull, _) => Check::Full,
        };
        let verifier: Arc<dyn ServerCertVerifier> = match check {
            Check::Nothing => Arc::new(Partial {
                provider,
                chain: None,
            }),
            Check::Chain | Check::Full => {
                let roots = Arc::new(self.roots()?);
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
                        .build()
                        .map_err(|e| StoreError::Invalid {
                            message: format!("TLS to PostgreSQL: {e}"),
                        })?;
                if check == Check::Full {
                    webpki
                } else {
                    Arc::new(Partial {
                        provider,
                        chain: Some(webpki),
                    })
                }
            }
        };
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(MakeRustlsConnect::new(config))
    }

    /// The trusted roots: `sslrootcert`'s, or the system's.
    fn roots(&self) -> Result<RootCertStore, StoreError> {
        let mut roots = RootCertStore::empty();
        match &self.root {
            Some(path) => {
                let certs = read_certificates(path)?;
                let (_, unusable) = roots.add_parsable_certificates(certs);
                if roots.is_empty() {
                    return Err(StoreError::Invalid {
                        message: format!(
                            "sslrootcert {}: no usable certificate ({unusable} could not be used)",
                            path.display()
                        ),
                    });
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(StoreError::Invalid {
                        message: "no system root certificates to check the PostgreSQL server's \
                                  against: give sslrootcert=FILE"
                            .into(),
                    });
                }
            }
        }
        Ok(roots)
    }
}

/// How much of the server's certificate is checked.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Check {
    Nothing,
    Chain,
    Full,
}

/// The PEM certificates in `path`.
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, StoreError> {
    let bad = |e: &dyn std::fmt::Display| StoreError::Invalid {
        message: format!("sslrootcert {}: {e}", path.display()),
    };
    CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))
}

/// Checks the server's certificate as far as the mode asks: not at all
/// (`prefer`, and `require` without roots), or its chain and dates but not
/// the name in it (`verify-ca`). The handshake's signatures are checked
/// either way, so the server must hold the certificate's key.
#[derive(Debug)]
struct Partial {
    provider: Arc<CryptoProvider>,
    /// The chain's check, when it is made.
    chain: Option<Arc<WebPkiServerVerifier>>,
}

impl ServerCertVerifier for Partial {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        // The name is checked last, once the chain is good.
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
