//! Turns a VM's raw serial console into its container's CRI log
//! (`<RFC 3339 time> stdout F <line>`), so `crictl logs` and `kubectl logs`
//! show the console. The read offset is kept beside the raw file, so a
//! restarted arktos-node goes on where it stopped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::task::JoinHandle;

const POLL: Duration = Duration::from_millis(200);
/// A line longer than this is written in parts (CRI's `P` tag).
const MAX_LINE: usize = 16 * 1024;

pub struct ConsoleLog {
    pub raw: PathBuf,
    pub log: PathBuf,
}

impl ConsoleLog {
    fn offset_file(&self) -> PathBuf {
        self.raw.with_extension("offset")
    }

    /// Follows the raw console until the task is aborted.
    pub fn follow(self) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut pending = Vec::new();
            let mut offset = read_offset(&self.offset_file()).await;
            loop {
                match self.pump(&mut offset, &mut pending).await {
                    Ok(()) => {}
                    Err(e) => {
                        tracing::debug!(raw = %self.raw.display(), error = %e, "console not readable yet")
                    }
                }
                tokio::time::sleep(POLL).await;
            }
        })
    }

    /// Copies what the console wrote since `offset`; one pass.
    pub async fn pump(&self, offset: &mut u64, pending: &mut Vec<u8>) -> std::io::Result<()> {
        let mut f = tokio::fs::File::open(&self.raw).await?;
        let len = f.metadata().await?.len();
        if len < *offset {
            // The file was replaced: start again from its beginning.
            *offset = 0;
            pending.clear();
        }
        if len == *offset {
            return Ok(());
        }
        f.seek(std::io::SeekFrom::Start(*offset)).await?;
        let mut buf = Vec::with_capacity((len - *offset) as usize);
        (&mut f).take(len - *offset).read_to_end(&mut buf).await?;
        *offset += buf.len() as u64;
        pending.extend_from_slice(&buf);
        let out = cri_lines(pending);
        if !out.is_empty() {
            let mut log = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .await?;
            log.write_all(&out).await?;
        }
        tokio::fs::write(self.offset_file(), offset.to_string()).await?;
        Ok(())
    }
}

async fn read_offset(path: &Path) -> u64 {
    tokio::fs::read_to_string(path)
        .await
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Takes the complete lines out of `pending` and formats them as CRI log
/// lines; an overlong unfinished line is flushed as partial.
fn cri_lines(pending: &mut Vec<u8>) -> Vec<u8> {
    let now = rfc3339_now();
    let mut out = Vec::new();
    while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = pending.drain(..=pos).collect();
        push_line(&mut out, &now, "F", &line[..line.len() - 1]);
    }
    while pending.len() > MAX_LINE {
        let part: Vec<u8> = pending.drain(..MAX_LINE).collect();
        push_line(&mut out, &now, "P", &part);
    }
    out
}

fn push_line(out: &mut Vec<u8>, time: &str, tag: &str, line: &[u8]) {
    // Serial consoles end lines with CR LF and draw with escape sequences.
    let text: Vec<u8> = line
        .iter()
        .copied()
        .filter(|&b| b != b'\r' && b != 0x1b)
        .collect();
    out.extend_from_slice(time.as_bytes());
    out.extend_from_slice(b" stdout ");
    out.extend_from_slice(tag.as_bytes());
    out.push(b' ');
    out.extend_from_slice(&text);
    out.push(b'\n');
}

pub fn rfc3339_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(now.as_secs() as i64, now.subsec_nanos())
}

/// UTC time as RFC 3339 with nanoseconds (civil-from-days, no time crate).
pub fn rfc3339(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(1_795_651_200, 5), "2026-11-26T00:00:00.000000005Z");
        assert_eq!(rfc3339(951_825_600, 0), "2000-02-29T12:00:00.000000000Z");
    }

    #[test]
    fn complete_lines_become_cri_lines_and_the_rest_waits() {
        let mut pending = b"SeaBIOS\r\nARKTOS-GUEST-BOOTED\npart".to_vec();
        let out = String::from_utf8(cri_lines(&mut pending)).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].ends_with(" stdout F SeaBIOS"), "{}", lines[0]);
        assert!(lines[1].ends_with(" stdout F ARKTOS-GUEST-BOOTED"));
        assert_eq!(pending, b"part");
    }

    #[tokio::test]
    async fn pump_resumes_from_the_saved_offset() {
        let dir = std::env::temp_dir().join(format!("arktos-console-{}", crate::ids::new_id()));
        tokio::fs::create_dir_all(&dir).await.unwrap();
        let c = ConsoleLog {
            raw: dir.join("console.raw"),
            log: dir.join("vm.log"),
        };
        tokio::fs::write(&c.raw, "one\ntwo\n").await.unwrap();
        let (mut offset, mut pending) = (0, Vec::new());
        c.pump(&mut offset, &mut pending).await.unwrap();
        assert_eq!(offset, 8);
        assert_eq!(read_offset(&c.offset_file()).await, 8);
        let mut f = tokio::fs::OpenOptions::new()
            .append(true)
            .open(&c.raw)
            .await
            .unwrap();
        f.write_all(b"three\n").await.unwrap();
        let mut offset = read_offset(&c.offset_file()).await;
        c.pump(&mut offset, &mut pending).await.unwrap();
        let log = tokio::fs::read_to_string(&c.log).await.unwrap();
        assert_eq!(log.lines().count(), 3);
        assert!(log.lines().last().unwrap().ends_with("stdout F three"));
        tokio::fs::remove_dir_all(&dir).await.unwrap();
    }
}
