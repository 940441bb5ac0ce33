use baton_testkit::tls::openssl;

use super::*;

/// A self-signed certificate for `localhost` and its key, in PEM.
fn pair() -> (String, String) {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    (generated.cert.pem(), generated.signing_key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_matching_pair_loads_and_anything_else_names_its_file_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_pem, key_pem) = pair();
    let (_, other_key) = pair();
    let cert = write(dir.path(), "cert.pem", &cert_pem);
    let key = write(dir.path(), "key.pem", &key_pem);
    let loaded = Certificates::load(&cert, &key).unwrap();
    assert_eq!(loaded.chain().len(), 1);

    let missing = dir.path().join("missing.pem");
    let error = Certificates::load(&missing, &key).unwrap_err();
    assert!(
        matches!(&error, TlsError::Read { what: "certificate", path, .. } if *path == missing),
        "{error}"
    );
    let error = Certificates::load(&cert, &missing).unwrap_err();
    assert!(
        matches!(error, TlsError::Read { what: "key", .. }),
        "{error}"
    );

    let wrong = write(dir.path(), "wrong.pem", &other_key);
    let error = Certificates::load(&cert, &wrong).unwrap_err();
    assert!(matches!(error, TlsError::Mismatch { .. }), "{error}");
    assert!(error.to_string().contains("does not match"), "{error}");

    // The files swapped: no certificate in the key's place and no key in the certificate's.
    let error = Certificates::load(&key, &cert).unwrap_err();
    assert!(matches!(error, TlsError::NoCertificate { .. }), "{error}");
    let error = Certificates::load(&cert, &cert).unwrap_err();
    assert!(matches!(error, TlsError::NoKey { .. }), "{error}");

    let garbled = write(
        dir.path(),
        "garbled.pem",
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    );
    let error = Certificates::load(&garbled, &key).unwrap_err();
    assert!(matches!(error, TlsError::Pem { .. }), "{error}");
}

#[test]
fn pkcs1_rsa_and_sec1_ec_keys_load_too() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // PKCS#1 ("RSA PRIVATE KEY") and SEC1 ("EC PRIVATE KEY"), as older tools write them.
    openssl(d, &["genrsa", "-traditional", "-out", "rsa.pem", "2048"]);
    openssl(
        d,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ec.pem",
        ],
    );
    for (key, first_line) in [
        ("rsa.pem", "-----BEGIN RSA PRIVATE KEY-----"),
        ("ec.pem", "-----BEGIN EC PRIVATE KEY-----"),
    ] {
        let text = std::fs::read_to_string(d.join(key)).unwrap();
        assert!(text.starts_with(first_line), "{key}: {text}");
        let cert = format!("{key}.crt");
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                key,
                "-subj",
                "/CN=localhost",
                "-days",
                "1",
                "-out",
                &cert,
            ],
        );
        Certificates::load(&d.join(&cert), &d.join(key)).unwrap_or_else(|e| panic!("{key}: {e}"));
    }
}

#[test]
fn a_reload_swaps_only_to_a_good_new_pair() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_pem, key_pem) = pair();
    let cert = write(dir.path(), "cert.pem", &cert_pem);
    let key = write(dir.path(), "key.pem", &key_pem);
    let certificates = Certificates::load(&cert, &key).unwrap();
    let first = certificates.chain();
    assert!(!certificates.reload().unwrap(), "unchanged files: no-op");

    // A new certificate without its key: refused, the first one stays.
    let (new_cert, new_key) = pair();
    write(dir.path(), "cert.pem", &new_cert);
    assert!(matches!(
        certificates.reload(),
        Err(TlsError::Mismatch { .. })
    ));
    assert_eq!(certificates.chain(), first);
    write(dir.path(), "key.pem", &new_key);
    assert!(certificates.reload().unwrap());
    let second = certificates.chain();
    assert_ne!(second, first);
    assert_eq!(
        second[0].as_ref(),
        CertificateDer::from_pem_slice(new_cert.as_bytes())
            .unwrap()
            .as_ref()
    );
}
