//! A static file server on loopback: the real node's VM images, as a web
//! server would serve them (GET and HEAD, Content-Length, 404 for what is
//! absent). It lives as long as the cluster holds it.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::{IoContext, Result};

/// Stops serving when dropped.
#[derive(Debug)]
pub struct FileServer {
    stop: Arc<AtomicBool>,
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

pub fn serve(root: PathBuf, port: u16) -> Result<FileServer> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .context(|| format!("binding the VM image server to port {port}"))?;
    listener
        .set_nonblocking(true)
        .context(|| "configuring the VM image server".into())?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    std::thread::spawn(move || {
        while !stopped.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => {
                    let root = root.clone();
                    std::thread::spawn(move || {
                        let _ = answer(&root, stream);
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    });
    Ok(FileServer { stop })
}

fn answer(root: &Path, stream: TcpStream) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // Headers are read and ignored.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut out = stream;
    let mut words = request.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or("/"));
    let file = resolve(root, target);
    let found = file
        .as_ref()
        .and_then(|f| std::fs::File::open(f).ok())
        .and_then(|f| {
            let len = f.metadata().ok().filter(|m| m.is_file())?.len();
            Some((f, len))
        });
    match (method, found) {
        ("GET" | "HEAD", Some((mut f, len))) => {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
            )?;
            if method == "GET" {
                std::io::copy(&mut f, &mut out)?;
            }
        }
        ("GET" | "HEAD", None) => {
            let body = "not found\n";
            write!(
                out,
                "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
        }
        _ => write!(
            out,
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?,
    }
    out.flush()
}

/// The file a request path names under `root`; nothing outside it.
fn resolve(root: &Path, target: &str) -> Option<PathBuf> {
    let path = target.split('?').next()?.trim_start_matches('/');
    let rel = Path::new(path);
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(root.join(rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_under_the_root() {
        let root = Path::new("/srv");
        assert_eq!(
            resolve(root, "/a/b.img"),
            Some(PathBuf::from("/srv/a/b.img"))
        );
        assert_eq!(resolve(root, "/../etc/passwd"), None);
        assert_eq!(resolve(root, "/a/../../x"), None);
    }
}
