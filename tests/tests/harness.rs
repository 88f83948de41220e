//! The harness itself: nats-server starts on a dynamic port, restarts on the
//! same port, and our binaries are found.

use std::net::TcpStream;

use nordlys_tests::NatsServer;

#[test]
fn nats_server_starts_and_restarts_on_the_same_port() {
    let mut nats = NatsServer::start();
    let port = nats.port();
    assert_ne!(port, 0);
    assert!(nats.url().ends_with(&format!(":{port}")));
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());

    nats.stop();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());

    nats.restart();
    assert_eq!(nats.port(), port);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
}
