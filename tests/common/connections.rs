//! Raw TCP clients for the connection limits: connections that send
//! nothing or too little, and how long the server keeps them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The first bytes of every HTTP/2 connection.
pub const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Connects to `addr` (waiting up to 10 s for a server that is still
/// starting) and sends `bytes` (nothing when empty), then nothing more.
pub async fn connect_and_send(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match TcpStream::connect(addr).await {
            Ok(stream) => break stream,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot connect to {addr}: {e}"),
        }
    };
    if !bytes.is_empty() {
        stream.write_all(bytes).await.unwrap();
    }
    stream
}

/// How long after this call the server closed `stream` (end of stream or a
/// reset), reading and discarding what it sends meanwhile (its HTTP/2
/// settings, say); `None` when it is still open after `limit`.
pub async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    closed.is_ok().then(|| started.elapsed())
}
