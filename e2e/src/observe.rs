//! Reading what the running components say about themselves: the
//! operators' health endpoints (metrics, recorded reconciles) and a
//! process's CPU time and memory from /proc.

use serde::Deserialize;

/// `GET http://127.0.0.1:<port><path>` (HTTP/1.0, the body only).
pub async fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    Ok(answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default())
}

/// The sum of the samples of metric `name` (with any labels) whose line
/// contains `filter`, from an operators instance's `/metrics`.
pub async fn metric(port: u16, name: &str, filter: &str) -> std::io::Result<f64> {
    let text = http_get(port, "/metrics").await?;
    Ok(text
        .lines()
        .filter(|l| {
            (l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")))
                && l.contains(filter)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// The reconciles an operators instance recorded (`/debug/reconciles`).
#[derive(Clone, Debug, Deserialize)]
pub struct ReconcileLog {
    pub instance: String,
    pub reconciles: Vec<Reconcile>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Reconcile {
    pub object: String,
    /// Unix time in microseconds.
    pub start: u128,
    pub end: u128,
}

pub async fn reconciles(port: u16) -> anyhow::Result<ReconcileLog> {
    Ok(serde_json::from_str(
        &http_get(port, "/debug/reconciles").await?,
    )?)
}

/// Unix time in microseconds, as the reconcile records keep it.
pub fn micros_now() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or_default()
}

/// CPU seconds (user + system) process `pid` has used.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    // Clock ticks per second: 100 on Linux for every architecture we run on.
    const TICKS: f64 = 100.0;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command, which may hold spaces, in parentheses;
    // utime and stime are the 12th and 13th of them.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok((ticks(11) + ticks(12)) / TICKS)
}

/// Resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for process {pid}"))
}
