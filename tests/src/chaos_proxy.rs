//! A TCP proxy a test puts between services and PostgreSQL or RabbitMQ, to
//! fail the network the way a killed process never does: silently.
//!
//! A killed server resets its connections and both ends learn at once. A
//! partition (a cable, a switch, a firewall or NAT that forgets its state)
//! drops packets instead: nothing is closed, writes still succeed, reads
//! just never return. A client without timeouts and heartbeats waits on
//! such a connection forever, and a server holds its locks meanwhile.
//!
//! [`ChaosProxy::partition`] swallows every byte, both ways, on every
//! connection. [`ChaosProxy::heal`] lets new connections through again, but
//! a connection that lived through the partition stays black-holed for good
//! (the device that forgot it still drops its packets): each end has to find
//! out by itself and connect again.

use std::io;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, Default)]
struct Network {
    partitioned: bool,
    /// Partitions so far: a connection older than the last one is dead.
    partitions: u64,
}

pub struct ChaosProxy {
    port: u16,
    network: watch::Sender<Network>,
    stop: CancellationToken,
}

impl ChaosProxy {
    /// Listens on an ephemeral port of 127.0.0.1 and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (network, _) = watch::channel(Network::default());
        let stop = CancellationToken::new();
        let accepting = (network.subscribe(), stop.clone());
        tokio::spawn(async move {
            let (network, stop) = accepting;
            loop {
                let accepted = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                if let Ok((client, _)) = accepted {
                    tokio::spawn(forward(client, upstream, network.clone(), stop.clone()));
                }
            }
        });
        Ok(Self { port, network, stop })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// From now on every byte is dropped, on open connections and on those
    /// opened during the partition; nothing is closed.
    pub fn partition(&self) {
        self.network.send_modify(|n| {
            n.partitioned = true;
            n.partitions += 1;
        });
    }

    /// New connections pass again; the ones that lived through the
    /// partition stay black-holed.
    pub fn heal(&self) {
        self.network.send_modify(|n| n.partitioned = false);
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn forward(client: TcpStream, upstream: SocketAddr, network: watch::Receiver<Network>, stop: CancellationToken) {
    let born = *network.borrow();
    let dead = |network: &watch::Receiver<Network>| {
        let now = *network.borrow();
        born.partitioned || now.partitions > born.partitions
    };
    let (mut client_read, mut client_write) = client.into_split();
    if born.partitioned {
        // Accepted, as the kernel would, then silence: the client's
        // handshake waits for an answer that never comes.
        swallow(&mut client_read, &stop).await;
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else { return };
    let (mut server_read, mut server_write) = server.into_split();
    let mut from_client = vec![0u8; 16 * 1024];
    let mut from_server = vec![0u8; 16 * 1024];
    loop {
        let (read, client_spoke) = tokio::select! {
            _ = stop.cancelled() => return,
            read = client_read.read(&mut from_client) => (read, true),
            read = server_read.read(&mut from_server) => (read, false),
        };
        let (bytes, to, other) = if client_spoke {
            (&from_client, &mut server_write, &mut server_read)
        } else {
            (&from_server, &mut client_write, &mut client_read)
        };
        match read {
            Ok(n) if n > 0 => {
                if !dead(&network) && to.write_all(&bytes[..n]).await.is_err() {
                    return;
                }
            }
            // One end closed a healthy connection: so does the other.
            _ if !dead(&network) => return,
            // One end left a dead connection: the other must not learn it
            // (the server's own timeouts have to end the session and release
            // what it holds). Kept open until the proxy stops.
            _ => {
                swallow(other, &stop).await;
                return;
            }
        }
    }
}

/// Reads and drops until the peer closes or the proxy stops (a stopped
/// proxy closes every connection it holds).
async fn swallow(read: &mut tokio::net::tcp::OwnedReadHalf, stop: &CancellationToken) {
    let mut sink = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            n = read.read(&mut sink) => if matches!(n, Ok(0) | Err(_)) { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// An upstream that echoes every byte back.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = socket.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        addr
    }

    /// Sends `text` and returns what comes back within 300 ms (`None`: nothing).
    async fn round_trip(stream: &mut TcpStream, text: &[u8]) -> Option<Vec<u8>> {
        stream.write_all(text).await.unwrap();
        let mut back = vec![0u8; text.len()];
        match tokio::time::timeout(Duration::from_millis(300), stream.read_exact(&mut back)).await {
            Ok(Ok(_)) => Some(back),
            Ok(Err(e)) => panic!("the proxy closed the connection instead of black-holing it: {e}"),
            Err(_) => None,
        }
    }

    #[tokio::test]
    async fn forwards_until_partitioned_then_black_holes_old_connections_for_good() {
        let proxy = ChaosProxy::start(echo_server().await).await.unwrap();
        let address = format!("127.0.0.1:{}", proxy.port());
        let mut old = TcpStream::connect(&address).await.unwrap();
        assert_eq!(round_trip(&mut old, b"before").await.as_deref(), Some(&b"before"[..]));

        proxy.partition();
        assert_eq!(round_trip(&mut old, b"during").await, None, "an open connection got through the partition");
        let mut during = TcpStream::connect(&address).await.unwrap();
        assert_eq!(round_trip(&mut during, b"new").await, None, "a new connection got through the partition");

        proxy.heal();
        let mut fresh = TcpStream::connect(&address).await.unwrap();
        assert_eq!(round_trip(&mut fresh, b"after").await.as_deref(), Some(&b"after"[..]));
        assert_eq!(round_trip(&mut old, b"still?").await, None, "a partitioned connection came back");
        assert_eq!(round_trip(&mut during, b"still?").await, None, "a partitioned connection came back");
    }

    #[tokio::test]
    async fn the_server_never_learns_that_a_client_left_a_dead_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = listener.local_addr().unwrap();
        let (closed_tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let closed_tx = closed_tx.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while !matches!(socket.read(&mut buf).await, Ok(0) | Err(_)) {}
                    let _ = closed_tx.send(());
                });
            }
        });
        let proxy = ChaosProxy::start(upstream).await.unwrap();
        let address = format!("127.0.0.1:{}", proxy.port());

        let healthy = TcpStream::connect(&address).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(healthy);
        let seen = tokio::time::timeout(Duration::from_secs(2), closed.recv()).await;
        assert!(seen.is_ok(), "a client closing a healthy connection is seen by the server");

        let doomed = TcpStream::connect(&address).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        proxy.partition();
        drop(doomed);
        let seen = tokio::time::timeout(Duration::from_millis(500), closed.recv()).await;
        assert!(seen.is_err(), "the server saw a client leave a partitioned connection");
        drop(proxy);
        let seen = tokio::time::timeout(Duration::from_secs(2), closed.recv()).await;
        assert!(seen.is_ok(), "a stopped proxy closes what it held");
    }
}
