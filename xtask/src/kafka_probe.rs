//! A liveness probe for the local Kafka broker: one Metadata round trip
//! with a deadline, spoken over a plain TCP connection to the broker's own
//! port.
//!
//! Why Metadata: Tansu 0.6 serves every request that touches its data,
//! Metadata included, through one storage task (`ChannelRequestService`,
//! tansu-storage-0.6.0/src/service.rs). Once that task has panicked, every
//! such request fails (`UnableToSend`, then a panic in the connection's
//! task), while the port still accepts connections. The probe asks about a
//! named topic, so the answer must come from storage.
//!
//! Why not librdkafka: a client connects where the broker advertises
//! itself after bootstrapping, which in a chaos run with partitions is the
//! runner's proxy, so the probe would test the proxy's link too; and it
//! would add a client's threads and retries where one request is wanted.

use std::{net::SocketAddr, time::Duration};

use thiserror::Error;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

/// Metadata, version 4: the first with `allow_auto_topic_creation`, so
/// asking about a topic never creates it.
const METADATA_API_KEY: i16 = 3;
const METADATA_VERSION: i16 = 4;
const CLIENT_ID: &str = "ordermesh-kafka-supervisor";
/// A topic nobody creates: the broker must look it up in its storage.
pub const PROBE_TOPIC: &str = "ordermesh.liveness-probe";
/// A Metadata answer about one topic is a few hundred bytes.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProbeError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{doing}: {error}")]
    Io { doing: &'static str, error: String },
    #[error("malformed answer: {0}")]
    Malformed(String),
}

/// One Metadata round trip to `address` within `timeout`; the broker ids it
/// named on success.
pub async fn probe(address: SocketAddr, timeout: Duration) -> Result<Vec<i32>, ProbeError> {
    let correlation_id = i32::try_from(std::process::id() % 0x7fff_ffff).unwrap_or(1);
    let exchange = async {
        let io = |doing| move |error: std::io::Error| ProbeError::Io { doing, error: error.to_string() };
        let mut stream = TcpStream::connect(address).await.map_err(io("connecting"))?;
        stream.write_all(&metadata_request(correlation_id, PROBE_TOPIC)).await.map_err(io("sending"))?;
        let mut size = [0_u8; 4];
        stream.read_exact(&mut size).await.map_err(io("reading the answer's size"))?;
        let size = usize::try_from(i32::from_be_bytes(size))
            .ok()
            .filter(|size| *size <= MAX_RESPONSE_BYTES)
            .ok_or_else(|| ProbeError::Malformed(format!("answer of {} bytes", i32::from_be_bytes(size))))?;
        let mut body = vec![0_u8; size];
        stream.read_exact(&mut body).await.map_err(io("reading the answer"))?;
        parse_metadata_response(&body, correlation_id)
    };
    tokio::time::timeout(timeout, exchange).await.map_err(|_| ProbeError::Timeout(timeout))?
}

/// A size-prefixed Metadata v4 request (header v1) about `topic`.
fn metadata_request(correlation_id: i32, topic: &str) -> Vec<u8> {
    let mut message = Vec::new();
    message.extend(METADATA_API_KEY.to_be_bytes());
    message.extend(METADATA_VERSION.to_be_bytes());
    message.extend(correlation_id.to_be_bytes());
    put_string(&mut message, CLIENT_ID);
    message.extend(1_i32.to_be_bytes());
    put_string(&mut message, topic);
    // allow_auto_topic_creation: false
    message.push(0);
    let size = i32::try_from(message.len()).unwrap_or(i32::MAX);
    let mut request = size.to_be_bytes().to_vec();
    request.extend(message);
    request
}

fn put_string(buffer: &mut Vec<u8>, text: &str) {
    buffer.extend(i16::try_from(text.len()).unwrap_or(i16::MAX).to_be_bytes());
    buffer.extend(text.as_bytes());
}

/// Reads a Metadata v4 answer (without its size) as far as its broker
/// list: correlation id, throttle time, brokers. That is enough to know
/// the broker answered this request with real data.
fn parse_metadata_response(body: &[u8], correlation_id: i32) -> Result<Vec<i32>, ProbeError> {
    let mut reader = Reader { bytes: body };
    let answered = reader.i32()?;
    if answered != correlation_id {
        return Err(ProbeError::Malformed(format!("correlation id {answered}, asked {correlation_id}")));
    }
    let _throttle_ms = reader.i32()?;
    let count = reader.i32()?;
    if count <= 0 {
        return Err(ProbeError::Malformed(format!("{count} brokers")));
    }
    let mut brokers = Vec::new();
    for _ in 0..count {
        brokers.push(reader.i32()?);
        reader.string()?; // host
        reader.i32()?; // port
        reader.string()?; // rack (nullable)
    }
    Ok(brokers)
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], ProbeError> {
        if self.bytes.len() < n {
            return Err(ProbeError::Malformed(format!("cut short ({} bytes left, {n} wanted)", self.bytes.len())));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn i32(&mut self) -> Result<i32, ProbeError> {
        let bytes = self.take(4)?;
        Ok(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// A (nullable) string; its contents are not needed.
    fn string(&mut self) -> Result<(), ProbeError> {
        let bytes = self.take(2)?;
        let length = i16::from_be_bytes([bytes[0], bytes[1]]);
        if length > 0 {
            self.take(usize::try_from(length).unwrap_or(0))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn answer(correlation_id: i32, brokers: &[(i32, &str, i32)]) -> Vec<u8> {
        let mut body = correlation_id.to_be_bytes().to_vec();
        body.extend(0_i32.to_be_bytes());
        body.extend(i32::try_from(brokers.len()).unwrap().to_be_bytes());
        for (id, host, port) in brokers {
            body.extend(id.to_be_bytes());
            put_string(&mut body, host);
            body.extend(port.to_be_bytes());
            body.extend((-1_i16).to_be_bytes());
        }
        // cluster id, controller, topics: not read
        body.extend((-1_i16).to_be_bytes());
        body.extend(0_i32.to_be_bytes());
        body.extend(0_i32.to_be_bytes());
        body
    }

    #[test]
    fn the_request_is_a_metadata_v4_request_about_one_topic() {
        let request = metadata_request(7, "t");
        let size = i32::from_be_bytes([request[0], request[1], request[2], request[3]]);
        assert_eq!(usize::try_from(size).unwrap(), request.len() - 4);
        assert_eq!(&request[4..8], &[0, 3, 0, 4], "api key 3 (Metadata), version 4");
        assert_eq!(&request[8..12], &7_i32.to_be_bytes());
        let topics = 12 + 2 + CLIENT_ID.len();
        assert_eq!(&request[topics..], &[0, 0, 0, 1, 0, 1, b't', 0], "one topic, no auto-creation");
    }

    #[test]
    fn an_answer_is_read_as_far_as_its_brokers() {
        assert_eq!(parse_metadata_response(&answer(9, &[(0, "127.0.0.1", 23092)]), 9), Ok(vec![0]));
        assert!(matches!(parse_metadata_response(&answer(8, &[(0, "h", 1)]), 9), Err(ProbeError::Malformed(_))));
        assert!(matches!(parse_metadata_response(&answer(9, &[]), 9), Err(ProbeError::Malformed(_))));
        let cut = answer(9, &[(0, "127.0.0.1", 23092)]);
        assert!(matches!(parse_metadata_response(&cut[..14], 9), Err(ProbeError::Malformed(_))));
    }

    #[tokio::test]
    async fn a_listener_that_answers_passes_and_one_that_does_not_fails_in_time() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            // First connection: a real answer.
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut size = [0_u8; 4];
            stream.read_exact(&mut size).await.unwrap();
            let mut request = vec![0_u8; usize::try_from(i32::from_be_bytes(size)).unwrap()];
            stream.read_exact(&mut request).await.unwrap();
            let correlation_id = i32::from_be_bytes([request[4], request[5], request[6], request[7]]);
            let body = answer(correlation_id, &[(0, "127.0.0.1", 1)]);
            stream.write_all(&i32::try_from(body.len()).unwrap().to_be_bytes()).await.unwrap();
            stream.write_all(&body).await.unwrap();
            // Second: accepted, never answered (a wedged broker's port).
            let (silent, _) = listener.accept().await.unwrap();
            // Third: closed at once (a broker whose request task panicked).
            let (closed, _) = listener.accept().await.unwrap();
            drop(closed);
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(silent);
        });
        assert_eq!(probe(address, Duration::from_secs(2)).await, Ok(vec![0]));
        let silent = probe(address, Duration::from_millis(300)).await;
        assert_eq!(silent, Err(ProbeError::Timeout(Duration::from_millis(300))));
        let closed = probe(address, Duration::from_secs(2)).await;
        assert!(matches!(closed, Err(ProbeError::Io { .. })), "{closed:?}");
        server.abort();
    }
}
