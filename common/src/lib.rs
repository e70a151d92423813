//! Shared pieces of the edge platform: canonical object keys, tracing setup and the small HTTP server
//! for `/metrics`, `/healthz` and `/readyz` that every process runs.

pub mod access_key;
pub mod go_json;
pub mod go_jwt;
pub mod keys;
pub mod notify_client;
pub mod ops;
pub mod pki;
pub mod proto_json;
pub mod telemetry;
pub mod vault;

pub use keys::{Keyed, store_key, store_prefix};

/// Current time in unix milliseconds.
/// Waits for SIGINT or SIGTERM (what a terminal's Ctrl-C and a service manager's stop send), and says
/// which came.
pub async fn shutdown_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    Ok(tokio::select! {
        r = tokio::signal::ctrl_c() => r.map(|()| "SIGINT")?,
        _ = term.recv() => "SIGTERM",
    })
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// A duration written as `500ms`, `30s`, `5m` or `2h` (plain digits are seconds); `None` when it is not
/// one.
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = num.parse().ok()?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    Some(std::time::Duration::from_millis(n.checked_mul(ms)?))
}

/// Unix seconds of an RFC 3339 time (`2026-11-30T12:00:00Z`, `...+01:00`, fractions allowed); `None`
/// when it is not one.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && matches!(&rest[..1], "+" | "-") && &rest[3..4] == ":" => {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            let oh: i64 = rest[1..3].parse().ok()?;
            let om: i64 = rest[4..6].parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    // Days from 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    let (y2, m2) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + sec - offset)
}

/// The unix second a log's `since` names: a duration ago (`30s`, `5m`, `3h`) or an RFC 3339 time; `None`
/// when it is neither.
pub fn parse_since(s: &str) -> Option<i64> {
    match parse_duration(s) {
        Some(d) => Some(now_ms() / 1000 - d.as_secs() as i64),
        None => parse_rfc3339(s),
    }
}

/// The longest prefix every one of `names` starts with (empty when there are none).
pub fn common_prefix<'a>(names: &[&'a str]) -> &'a str {
    let Some((first, rest)) = names.split_first() else {
        return "";
    };
    let len = rest.iter().fold(first.len(), |len, n| {
        len.min(
            first
                .bytes()
                .zip(n.bytes())
                .take_while(|(a, b)| a == b)
                .count(),
        )
    });
    // A cut inside a character moves back to its start.
    let len = (0..=len)
        .rev()
        .find(|i| first.is_char_boundary(*i))
        .unwrap_or(0);
    &first[..len]
}

/// A new ksuid (segmentio/ksuid, as MobiledgeX's ids): 4 bytes of seconds since 2014-05-13 16:53:20 UTC
/// and 16 random bytes, as 27 base62 characters (sortable by creation time).
pub fn ksuid() -> String {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    const EPOCH: i64 = 1_400_000_000;
    let secs = (now_ms() / 1000 - EPOCH).clamp(0, u32::MAX as i64) as u32;
    let mut n = [0u8; 20];
    n[..4].copy_from_slice(&secs.to_be_bytes());
    n[4..].copy_from_slice(&vault::random_bytes(16));
    // Base62 by long division of the 160-bit big-endian number, least significant digit first.
    let mut out = [b'0'; 27];
    for slot in out.iter_mut().rev() {
        let mut rem = 0u32;
        for b in n.iter_mut() {
            let cur = (rem << 8) | u32::from(*b);
            *b = (cur / 62) as u8;
            rem = cur % 62;
        }
        *slot = ALPHABET[rem as usize];
    }
    String::from_utf8(out.to_vec()).expect("ascii")
}

/// The registry an image reference names (`host[:port]` before the first `/`, when that part has a `.` or
/// `:` or is `localhost`, as Docker reads it); `None` for a local or Docker Hub short name.
pub fn image_registry(image: &str) -> Option<&str> {
    let (first, _) = image.split_once('/')?;
    (first.contains(['.', ':']) || first == "localhost").then_some(first)
}

/// Most bytes of an ExecRequest's output (an instance's logs) that travel and are stored: the end.
pub const MAX_EXEC_OUTPUT: usize = 1 << 20;

/// The last `max` bytes of `s`, cut at a character boundary.
pub fn tail_bytes(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// FNV-1a of `s`: stable across runs and versions, unlike std's hasher (resource and table names).
pub fn fnv1a(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// CPU seconds (user + system) and resident bytes of process `pid`, from /proc; `None` once it is gone.
pub fn process_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces and parentheses) follow the last ')'; utime
    // and stime are the 12th and 13th of them, in USER_HZ (100 on Linux).
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())?;
    Some((ticks / 100.0, rss_kb * 1024))
}

/// Concurrent streams one client connection may open on a gRPC server of the platform; more wait in
/// the client's HTTP/2 connection, never in an unbounded queue of the server.
pub const GRPC_MAX_CONCURRENT_STREAMS: u32 = 256;

/// Largest message the controller's gRPC servers accept or send (a larger request: `OutOfRange`).
pub const GRPC_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Applies a message size limit to a generated tonic server, both ways.
#[macro_export]
macro_rules! limit_messages {
    ($server:expr, $bytes:expr) => {
        $server
            .max_decoding_message_size($bytes)
            .max_encoding_message_size($bytes)
    };
}

/// Accepted connections of a gRPC server bound by the caller, with TCP_NODELAY (without it a small
/// reply written in several pieces waits for the peer's delayed ACK, about 40 ms per call), every one of
/// them failing at once when `stop` turns true or its sender goes. A server task that is aborted stops
/// accepting but leaves its connections served by their own tasks; with this, a component stopped in
/// its process (a test's "crash") ends its connections as a killed process does, and clients reconnect
/// to its successor instead of talking to a server without its background tasks.
pub fn grpc_incoming(
    listener: tokio::net::TcpListener,
    stop: tokio::sync::watch::Receiver<bool>,
) -> impl tokio_stream::Stream<Item = std::io::Result<Killable>> + Send + 'static {
    use tokio_stream::StreamExt;
    tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .map(move |conn| conn.map(|io| Killable::new(io, stop.clone())))
}

/// A TCP connection that fails every read and write once its server stops ([`grpc_incoming`]).
pub struct Killable {
    io: tokio::net::TcpStream,
    stopped: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Killable {
    fn new(io: tokio::net::TcpStream, mut stop: tokio::sync::watch::Receiver<bool>) -> Self {
        Self {
            io,
            stopped: Box::pin(async move {
                let _ = stop.wait_for(|s| *s).await;
            }),
        }
    }

    /// Ready with an error once the server stopped (and registers for that moment otherwise).
    fn check(&mut self, cx: &mut std::task::Context<'_>) -> std::io::Result<()> {
        match self.stopped.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => Err(std::io::ErrorKind::ConnectionAborted.into()),
            std::task::Poll::Pending => Ok(()),
        }
    }
}

impl tonic::transport::server::Connected for Killable {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl tokio::io::AsyncRead for Killable {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return std::task::Poll::Ready(Err(e));
        }
        std::pin::Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Killable {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return std::task::Poll::Ready(Err(e));
        }
        std::pin::Pin::new(&mut this.io).poll_write(cx, buf)
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn ksuids_are_27_base62_characters_ordered_by_time() {
        let (a, b) = (super::ksuid(), super::ksuid());
        assert_eq!(a.len(), 27);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
        // Time comes first: an id of now is above one of 2014 (seconds since the epoch are non-zero).
        assert!(a.as_str() > "000001" && a.as_str() <= "aWgEPTl1tmebfsQzFP4bxwgy80V");
    }

    #[test]
    fn common_prefixes() {
        use super::common_prefix;
        assert_eq!(
            common_prefix(&["IMAGE_TYPE_DOCKER", "IMAGE_TYPE_QCOW"]),
            "IMAGE_TYPE_"
        );
        assert_eq!(common_prefix(&["A"]), "A");
        assert_eq!(common_prefix(&[]), "");
        assert_eq!(common_prefix(&["é1", "é2", "ê"]), "");
    }

    #[test]
    fn the_tail_of_a_log_is_cut_at_a_character() {
        assert_eq!(super::tail_bytes("abc", 10), "abc");
        assert_eq!(super::tail_bytes("abcdef", 3), "def");
        // "é" is two bytes: a cut inside it moves past it.
        assert_eq!(super::tail_bytes("aéb", 2), "b");
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let (_, rss) = super::process_usage(std::process::id()).unwrap();
        assert!(rss > 0);
        assert_eq!(super::process_usage(u32::MAX), None);
    }

    #[test]
    fn durations_read_like_the_help_says() {
        use std::time::Duration;
        let d = super::parse_duration;
        assert_eq!(d("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(d("30s"), Some(Duration::from_secs(30)));
        assert_eq!(d("5m"), Some(Duration::from_secs(300)));
        assert_eq!(d("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(d("7"), Some(Duration::from_secs(7)));
        for bad in ["", "1d", "soon", "-1s", "s"] {
            assert_eq!(d(bad), None, "{bad}");
        }
    }
}
