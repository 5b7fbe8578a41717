//! Serving certificates: loading, validation, hot reload, optional client
//! certificate verification (mTLS).
//!
//! Files are polled by *content*, not by inotify: a Kubernetes Secret volume
//! swaps a `..data` symlink, which file watches miss, while re-reading two
//! small files a second is cheap and sees every form of update. A pair that
//! fails to parse or whose key does not match keeps the old certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{DistinguishedName, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use crate::metrics::{ErrorClass, Metrics};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: String },
    #[error("{path}: no usable PEM private key: {message}")]
    Key { path: String, message: String },
    #[error("the private key does not match the certificate, or is unsupported: {0}")]
    Mismatch(String),
    #[error("{path}: not a usable CA bundle: {message}")]
    ClientCa { path: String, message: String },
    #[error("{0}")]
    Config(String),
}

/// Where the TLS material comes from, and how often it is checked;
/// `serve` flattens it into its flags.
#[derive(clap::Args, Clone, Debug)]
pub struct TlsFiles {
    /// Serving certificate chain (PEM); re-read when it changes.
    #[arg(
        long = "tls-cert",
        value_name = "TLS_CERT",
        env = "REBOOT_WEBHOOK_TLS_CERT"
    )]
    pub cert: PathBuf,
    /// Serving private key (PEM); re-read when it changes.
    #[arg(
        long = "tls-key",
        value_name = "TLS_KEY",
        env = "REBOOT_WEBHOOK_TLS_KEY"
    )]
    pub key: PathBuf,
    /// Require client certificates signed by this CA bundle (PEM); re-read when it changes.
    #[arg(long, env = "REBOOT_WEBHOOK_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
    /// With --client-ca: accept only clients whose CN or DNS SAN is one of these (repeatable).
    // Empty: any client the CA signed.
    #[arg(
        long = "client-name",
        env = "REBOOT_WEBHOOK_CLIENT_NAME",
        value_delimiter = ',',
        requires = "client_ca"
    )]
    pub client_names: Vec<String>,
    /// How often the TLS files are checked for changes.
    #[arg(long = "cert-reload-interval", value_name = "CERT_RELOAD_INTERVAL", env = "REBOOT_WEBHOOK_CERT_RELOAD_INTERVAL", default_value = "1s", value_parser = crate::values::period)]
    pub reload_interval: Duration,
}

/// The bytes a configuration was built from, to notice changes.
#[derive(PartialEq, Eq, Default)]
struct Fingerprint {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Vec<u8>,
}

/// The current `ServerConfig`, rebuilt when the files change.
pub struct TlsConfig {
    files: TlsFiles,
    current: ArcSwap<ServerConfig>,
    loaded: std::sync::Mutex<Fingerprint>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The `notAfter` of a certificate as a Unix timestamp.
pub fn not_after(cert: &CertificateDer<'_>) -> Option<i64> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(parsed.validity().not_after.timestamp())
}

impl TlsConfig {
    /// Loads the files now; fails when they are missing or inconsistent.
    pub fn load(files: TlsFiles) -> Result<(Arc<TlsConfig>, Option<i64>), TlsError> {
        let fp = Self::fingerprint(&files)?;
        let (config, expiry) = Self::build(&files, &fp)?;
        Ok((
            Arc::new(TlsConfig {
                files,
                current: ArcSwap::from_pointee(config),
                loaded: std::sync::Mutex::new(fp),
            }),
            expiry,
        ))
    }

    /// The configuration for the next handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    fn fingerprint(files: &TlsFiles) -> Result<Fingerprint, TlsError> {
        Ok(Fingerprint {
            cert: read(&files.cert)?,
            key: read(&files.key)?,
            client_ca: match &files.client_ca {
                Some(p) => read(p)?,
                None => Vec::new(),
            },
        })
    }

    fn build(files: &TlsFiles, fp: &Fingerprint) -> Result<(ServerConfig, Option<i64>), TlsError> {
        let cert_path = files.cert.display().to_string();
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&fp.cert)
            .collect::<Result<_, _>>()
            .map_err(|_| TlsError::NoCertificate {
                path: cert_path.clone(),
            })?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate { path: cert_path });
        }
        let key = PrivateKeyDer::from_pem_slice(&fp.key).map_err(|e| TlsError::Key {
            path: files.key.display().to_string(),
            message: e.to_string(),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsError::Mismatch(e.to_string()))?;
        let expiry = not_after(&chain[0]);
        let certified = CertifiedKey::new(chain, signing);
        certified
            .keys_match()
            .map_err(|e| TlsError::Mismatch(e.to_string()))?;

        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match &files.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let ca_err = |message: String| TlsError::ClientCa {
                    path: path.display().to_string(),
                    message,
                };
                let mut roots = RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(&fp.client_ca) {
                    roots
                        .add(c.map_err(|e| ca_err(e.to_string()))?)
                        .map_err(|e| ca_err(e.to_string()))?;
                }
                if roots.is_empty() {
                    return Err(ca_err("no certificate in it".into()));
                }
                let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| ca_err(e.to_string()))?;
                if files.client_names.is_empty() {
                    builder.with_client_cert_verifier(inner)
                } else {
                    builder.with_client_cert_verifier(Arc::new(NameCheckingVerifier {
                        inner,
                        names: files.client_names.clone(),
                    }))
                }
            }
        };
        let mut config = builder.with_cert_resolver(Arc::new(Fixed(Arc::new(certified))));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok((config, expiry))
    }

    /// Re-reads the files; swaps the configuration when they changed and are
    /// valid. Returns `Ok(true)` when a new configuration was loaded.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let fp = Self::fingerprint(&self.files)?;
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if *loaded == fp {
            return Ok(false);
        }
        let (config, expiry) = Self::build(&self.files, &fp)?;
        self.current.store(Arc::new(config));
        *loaded = fp;
        if let Some(e) = expiry {
            tracing::info!(not_after = e, "serving certificate reloaded");
        }
        Ok(true)
    }

    /// Polls the files every `--cert-reload-interval` until the process ends.
    pub fn spawn_reloader(self: &Arc<Self>, metrics: Arc<Metrics>) {
        let this = self.clone();
        let interval = self.files.reload_interval;
        tokio::spawn(async move {
            let mut last_error = String::new();
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let this2 = this.clone();
                let result = tokio::task::spawn_blocking(move || this2.reload()).await;
                match result {
                    Ok(Ok(true)) => {
                        last_error.clear();
                        if let Some(exp) = this.expiry() {
                            metrics.cert_expiry.set(exp as f64);
                        }
                    }
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => {
                        let msg = e.to_string();
                        if msg != last_error {
                            metrics.error(ErrorClass::certificate_reload);
                            tracing::warn!(error = %msg, "new TLS files not loaded; keeping the current certificate");
                            last_error = msg;
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "certificate reload task failed"),
                }
            }
        });
    }

    /// `notAfter` of the currently loaded leaf certificate.
    pub fn expiry(&self) -> Option<i64> {
        let loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        let first = CertificateDer::pem_slice_iter(&loaded.cert).next()?.ok()?;
        not_after(&first)
    }
}

/// Serves one certificate; a reload builds a new `ServerConfig` around a new one.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for Fixed {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Verifies the client chain with WebPKI, then requires the leaf's CN or a
/// DNS SAN to be on the allow-list (as Gatekeeper does for kube-apiserver).
#[derive(Debug)]
struct NameCheckingVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    names: Vec<String>,
}

impl NameCheckingVerifier {
    fn names_of(cert: &CertificateDer<'_>) -> Vec<String> {
        let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
            return Vec::new();
        };
        let mut names: Vec<String> = parsed
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
            .collect();
        if let Ok(Some(san)) = parsed.subject_alternative_name() {
            for n in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                    names.push((*d).to_owned());
                }
            }
        }
        names
    }
}

impl ClientCertVerifier for NameCheckingVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if Self::names_of(end_entity)
            .iter()
            .any(|n| self.names.contains(n))
        {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
