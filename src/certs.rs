//! `certs`: a development CA and a serving certificate signed by it.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The names a development serving certificate covers by default: loopback and
/// the in-cluster Service of `manifests/`.
pub fn default_hosts() -> Vec<String> {
    let svc = "kubevirt-reboot-webhook";
    let ns = "kubevirt-reboot-webhook";
    vec![
        "localhost".into(),
        "127.0.0.1".into(),
        "::1".into(),
        svc.into(),
        format!("{svc}.{ns}"),
        format!("{svc}.{ns}.svc"),
        format!("{svc}.{ns}.svc.cluster.local"),
    ]
}

/// PEM text of a generated CA and leaf.
pub struct Generated {
    pub ca_cert: String,
    pub ca_key: String,
    pub cert: String,
    pub key: String,
}

/// Makes a CA and a leaf for `hosts` (DNS names or IP addresses), valid one year.
pub fn generate(hosts: &[String], ca_name: &str) -> Result<Generated, rcgen::Error> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_key_pem = ca_key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;

    let mut params = CertificateParams::new(hosts.to_vec())?;
    params.distinguished_name.push(
        DnType::CommonName,
        hosts.first().map_or("localhost", String::as_str),
    );
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_after = time_in_days(365);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;
    Ok(Generated {
        ca_cert: ca.pem(),
        ca_key: ca_key_pem,
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

fn time_in_days(days: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() + time::Duration::days(days)
}

/// Writes `ca.crt`, `ca.key`, `tls.crt` and `tls.key` into `dir` (keys mode 0600).
pub fn write(dir: &Path, hosts: &[String]) -> anyhow::Result<()> {
    let g = generate(hosts, "kubevirt-reboot-webhook development CA")?;
    std::fs::create_dir_all(dir)?;
    for (name, text, secret) in [
        ("ca.crt", &g.ca_cert, false),
        ("ca.key", &g.ca_key, true),
        ("tls.crt", &g.cert, false),
        ("tls.key", &g.key, true),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text)?;
        if secret {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}
