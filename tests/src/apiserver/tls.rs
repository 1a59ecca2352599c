//! TLS for the test API server, for the clients that take nothing else: a pod's in-cluster
//! config (`https://$KUBERNETES_SERVICE_HOST`, verified against the service account's
//! `ca.crt`) and kubectl. The certificates are made with the `openssl` program: a CA, and a
//! server certificate for the listening address signed by it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// The CA clients trust and the acceptor that serves its certificate.
pub struct Tls {
    pub ca: PathBuf,
    pub acceptor: TlsAcceptor,
}

/// A CA and a server certificate for `ip` (and `kubernetes.default.svc`), in `dir`.
pub fn make(dir: &Path, ip: IpAddr) -> Tls {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("running openssl: {e}"));
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=pwt-apiserver-ca",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=pwt-apiserver",
        ],
    ]
    .concat());
    let ext = format!(
        "subjectAltName=IP:{ip},IP:127.0.0.1,DNS:kubernetes.default.svc\n\
         basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
    );
    std::fs::write(dir.join("server.ext"), ext).expect("writing the certificate extensions");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.crt"))
        .and_then(|certs| certs.collect())
        .expect("reading the server certificate");
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("reading the server key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("a valid server certificate");
    Tls {
        ca: dir.join("ca.crt"),
        acceptor: TlsAcceptor::from(Arc::new(config)),
    }
}
