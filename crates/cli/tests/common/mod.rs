//! Shared by the process tests: a test CA and a `localhost` certificate it
//! signed, written as PEM files.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;

/// PEM files of a `localhost` certificate and its key in a directory of
/// their own (removed on drop), and the CA to trust for them.
pub struct TestCert {
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA's certificate, PEM.
    pub ca_pem: String,
}

impl TestCert {
    /// A new CA and certificate, under a directory named after `label`.
    pub fn new(label: &str) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let dir = std::env::temp_dir().join(format!("duplex-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Self {
            dir,
            cert: cert_path,
            key: key_path,
            ca_pem: ca.pem(),
        }
    }

    /// The flags that serve TLS with it.
    pub fn flags(&self) -> [&str; 4] {
        [
            "--tls-cert",
            self.cert.to_str().unwrap(),
            "--tls-key",
            self.key.to_str().unwrap(),
        ]
    }

    /// Its CA, as a client's extra root.
    pub fn root(&self) -> duplex::tls::CaCertificate {
        duplex::tls::CaCertificate::Pem(self.ca_pem.clone().into_bytes())
    }
}

impl Drop for TestCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
