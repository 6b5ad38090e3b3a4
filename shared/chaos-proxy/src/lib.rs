//! A TCP proxy put between the services and PostgreSQL, RabbitMQ or Kafka
//! (by the network-fault tests and the chaos run), to fail the network the
//! way a killed process never does: silently.
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
//!
//! A server whose client left a dead connection never hears of it either,
//! unless it probes: [`ChaosProxy::with_server_keepalive`] stands for TCP
//! keepalive on the server (closing such a connection's server side after
//! a while), so that a long run with many partitions does not strand
//! server sessions (PostgreSQL backends, each holding a connection slot)
//! until the proxy stops.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, Default)]
struct Network {
    partitioned: bool,
    /// Partitions so far: a connection older than the last one is dead.
    partitions: u64,
    /// Healthy connections open now.
    live: u64,
    /// Connections a partition killed: open when it began, or opened during it.
    stranded: u64,
}

/// The state every connection's task shares with the proxy.
#[derive(Clone, Default)]
struct SharedNetwork(Arc<Mutex<Network>>);

impl SharedNetwork {
    fn lock(&self) -> MutexGuard<'_, Network> {
        // The state is a few counters, always consistent: a panic elsewhere
        // does not make it unusable.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub struct ChaosProxy {
    port: u16,
    upstream: SocketAddr,
    network: SharedNetwork,
    stop: CancellationToken,
}

impl ChaosProxy {
    /// Listens on an ephemeral port of 127.0.0.1 and forwards to `upstream`;
    /// a server is never told that a client left a dead connection.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        Self::listen(upstream, None).await
    }

    /// Like [`ChaosProxy::start`], but the server side of a dead connection
    /// its client has left is closed `after` that (as the server's TCP
    /// keepalive would find the client gone).
    pub async fn with_server_keepalive(upstream: SocketAddr, after: Duration) -> io::Result<Self> {
        Self::listen(upstream, Some(after)).await
    }

    async fn listen(upstream: SocketAddr, server_keepalive: Option<Duration>) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let network = SharedNetwork::default();
        let stop = CancellationToken::new();
        let accepting = (network.clone(), stop.clone());
        tokio::spawn(async move {
            let (network, stop) = accepting;
            loop {
                let accepted = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                if let Ok((client, _)) = accepted {
                    tokio::spawn(forward(client, upstream, network.clone(), stop.clone(), server_keepalive));
                }
            }
        });
        Ok(Self { port, upstream, network, stop })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where it forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Whether the network is partitioned now.
    pub fn is_partitioned(&self) -> bool {
        self.network.lock().partitioned
    }

    /// Connections the partitions so far have killed: a partition that
    /// killed none cut a link nobody was using.
    pub fn stranded(&self) -> u64 {
        self.network.lock().stranded
    }

    /// From now on every byte is dropped, on open connections and on those
    /// opened during the partition; nothing is closed.
    pub fn partition(&self) {
        let mut network = self.network.lock();
        if !network.partitioned {
            network.partitioned = true;
            network.partitions += 1;
            network.stranded += std::mem::take(&mut network.live);
        }
    }

    /// New connections pass again; the ones that lived through the
    /// partition stay black-holed.
    pub fn heal(&self) {
        self.network.lock().partitioned = false;
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn forward(
    client: TcpStream,
    upstream: SocketAddr,
    network: SharedNetwork,
    stop: CancellationToken,
    server_keepalive: Option<Duration>,
) {
    let born = {
        let mut now = network.lock();
        if now.partitioned {
            now.stranded += 1;
        }
        *now
    };
    let (mut client_read, client_write) = client.into_split();
    if born.partitioned {
        // Accepted, as the kernel would, then silence: the client's
        // handshake waits for an answer that never comes.
        swallow(&mut client_read, &stop, None).await;
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else { return };
    if !count_live(&network, born, 1) {
        // Partitioned while connecting: dead before it carried a byte.
        swallow(&mut client_read, &stop, None).await;
        return;
    }
    forward_until_closed(client_read, client_write, server, &network, born, &stop, server_keepalive).await;
    count_live(&network, born, -1);
}

/// Counts a healthy connection opening (+1) or closing (-1); false if a
/// partition has killed it since it was born (a partition takes the live
/// connections off the count and counts them stranded; one that was still
/// connecting is counted stranded here).
fn count_live(network: &SharedNetwork, born: Network, change: i8) -> bool {
    let mut now = network.lock();
    if now.partitions > born.partitions {
        if change > 0 {
            now.stranded += 1;
        }
        return false;
    }
    if change > 0 {
        now.live += 1;
    } else {
        now.live = now.live.saturating_sub(1);
    }
    true
}

async fn forward_until_closed(
    mut client_read: tokio::net::tcp::OwnedReadHalf,
    mut client_write: tokio::net::tcp::OwnedWriteHalf,
    server: TcpStream,
    network: &SharedNetwork,
    born: Network,
    stop: &CancellationToken,
    server_keepalive: Option<Duration>,
) {
    let dead = |network: &SharedNetwork| network.lock().partitions > born.partitions;
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
                if !dead(network) && to.write_all(&bytes[..n]).await.is_err() {
                    return;
                }
            }
            // One end closed a healthy connection: so does the other.
            _ if !dead(network) => return,
            // One end left a dead connection: the other must not learn it
            // (its own timeouts have to end the session and release what it
            // holds). Kept open until the proxy stops, or for the server
            // until its keepalive would have noticed.
            _ => {
                swallow(other, stop, if client_spoke { server_keepalive } else { None }).await;
                return;
            }
        }
    }
}

/// Reads and drops until the peer closes, the proxy stops (a stopped proxy
/// closes every connection it holds) or `until` has passed.
async fn swallow(read: &mut tokio::net::tcp::OwnedReadHalf, stop: &CancellationToken, until: Option<Duration>) {
    let mut sink = vec![0u8; 16 * 1024];
    let give_up = tokio::time::sleep(until.unwrap_or(Duration::MAX));
    tokio::pin!(give_up);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = &mut give_up, if until.is_some() => return,
            n = read.read(&mut sink) => if matches!(n, Ok(0) | Err(_)) { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

        assert_eq!(proxy.stranded(), 0);
        proxy.partition();
        assert_eq!(round_trip(&mut old, b"during").await, None, "an open connection got through the partition");
        let mut during = TcpStream::connect(&address).await.unwrap();
        assert_eq!(round_trip(&mut during, b"new").await, None, "a new connection got through the partition");
        assert_eq!(proxy.stranded(), 2, "the open connection and the one opened during the partition");

        proxy.heal();
        let mut fresh = TcpStream::connect(&address).await.unwrap();
        assert_eq!(round_trip(&mut fresh, b"after").await.as_deref(), Some(&b"after"[..]));
        assert_eq!(round_trip(&mut old, b"still?").await, None, "a partitioned connection came back");
        assert_eq!(round_trip(&mut during, b"still?").await, None, "a partitioned connection came back");

        // Only the connections alive at the next partition are stranded by it.
        drop(fresh);
        let mut kept = TcpStream::connect(&address).await.unwrap();
        assert_eq!(round_trip(&mut kept, b"kept").await.as_deref(), Some(&b"kept"[..]));
        tokio::time::sleep(Duration::from_millis(50)).await;
        proxy.partition();
        assert_eq!(proxy.stranded(), 3);
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

        // With keepalive, the server finds out after a while; the client
        // side of a dead connection stays silent all the same.
        let proxy = ChaosProxy::with_server_keepalive(upstream, Duration::from_millis(300)).await.unwrap();
        let address = format!("127.0.0.1:{}", proxy.port());
        let doomed = TcpStream::connect(&address).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        proxy.partition();
        assert!(proxy.is_partitioned());
        drop(doomed);
        let seen = tokio::time::timeout(Duration::from_millis(150), closed.recv()).await;
        assert!(seen.is_err(), "the server was told at once");
        let seen = tokio::time::timeout(Duration::from_secs(2), closed.recv()).await;
        assert!(seen.is_ok(), "the server's keepalive never noticed the client had gone");
        let mut held = TcpStream::connect(&address).await.unwrap();
        proxy.heal();
        assert!(!proxy.is_partitioned());
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(round_trip(&mut held, b"x").await, None, "a connection opened in the partition came back");
    }
}
