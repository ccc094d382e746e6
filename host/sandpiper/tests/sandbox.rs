//! Guests are components with no filesystem, network or environment.

mod common;

use common::Server;

#[test]
fn the_chat_guest_is_a_component() {
    let wasm = sandpiper::guests::CHAT;
    // Magic, then the component-model layer (0x0d 0x00 0x01 0x00), not a core module's 0x01.
    assert_eq!(&wasm[..4], b"\0asm");
    assert_eq!(&wasm[4..8], &[0x0d, 0x00, 0x01, 0x00]);
}

#[test]
fn guests_cannot_reach_files_network_or_environment() {
    let probe = format!("/probe/={}", sandpiper::guests::SANDBOX_PROBE_PATH);
    let server = Server::start(&["--guest", &probe]);
    // Something real to connect to, so a refusal is the sandbox's doing.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    for what in [
        "fs",
        "env",
        &format!("tcp?port={port}"),
        &format!("http?port={port}"),
    ] {
        let (status, body) = server.get(&format!("/probe/{what}"));
        assert_eq!(status, 200, "{what}: {body}");
        assert_eq!(body["ok"], false, "{what} escaped the sandbox: {body}");
        assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    // The chat routes still work beside the probe.
    let (status, _) = server.get("/v1/models");
    assert_eq!(status, 200);
}
