//! HTTPS when configured: a real TLS handshake against a certificate the client trusts, and no
//! plain-HTTP answer on the TLS port.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

#[test]
fn serves_https_with_the_configured_certificate() {
    let Some(home) = require() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (state, _admin) = visage_server::AppState::open(
        &data,
        &home,
        "open",
        &Default::default(),
        &Default::default(),
    )
    .unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let tls = visage_server::TlsFiles {
        cert: tmp.path().join("cert.pem"),
        key: tmp.path().join("key.pem"),
    };
    std::fs::write(&tls.cert, ck.cert.pem()).unwrap();
    std::fs::write(&tls.key, ck.key_pair.serialize_pem()).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let files = tls.clone();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(visage_server::serve_tls(listener, state, &files, async {
            let _ = stop_rx.await;
        }))
        .unwrap();
    });

    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let cfg = Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let get = |path: &str| -> String {
        let conn =
            rustls::ClientConnection::new(cfg.clone(), "localhost".try_into().unwrap()).unwrap();
        let sock = TcpStream::connect(addr).unwrap();
        let mut s = rustls::StreamOwned::new(conn, sock);
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = Vec::new();
        // A peer that closes without close_notify ends the read with an error after the data.
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    let r = get("/healthz");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains(r#"{"status":"ok"}"#), "{r}");
    let r = get("/v1/stats");
    assert!(
        r.starts_with("HTTP/1.1 401"),
        "authentication still applies over TLS: {r}"
    );

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(addr).unwrap();
    plain
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf);
    assert!(
        !String::from_utf8_lossy(&buf).contains("200 OK"),
        "plain HTTP was answered"
    );

    stop_tx.send(()).unwrap();
    server.join().unwrap();
}
