//! A static file server on loopback: the real node's VM images, as a web
//! server would serve them (GET and HEAD, Content-Length, 404 for what is
//! absent, HTTP Basic authentication below one prefix). It lives as long as
//! the cluster holds it.

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

/// Paths under `prefix` are served only to `user` with `password`.
#[derive(Clone, Debug)]
pub struct Guarded {
    pub prefix: String,
    pub user: String,
    pub password: String,
}

impl Guarded {
    /// Whether a request for `target` with these headers may be answered.
    fn admits(&self, target: &str, authorization: Option<&str>) -> bool {
        use base64::Engine;
        // As `resolve` reads the path: `//private/x` is `private/x`.
        let path = target.split('?').next().unwrap_or_default();
        if !path
            .trim_start_matches('/')
            .starts_with(self.prefix.trim_start_matches('/'))
        {
            return true;
        }
        let expected = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.user, self.password));
        authorization
            .and_then(|a| a.trim().strip_prefix("Basic "))
            .is_some_and(|given| given.trim() == expected)
    }
}

pub fn serve(root: PathBuf, port: u16, guarded: Option<Guarded>) -> Result<FileServer> {
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
                    let guarded = guarded.clone();
                    std::thread::spawn(move || {
                        let _ = answer(&root, guarded.as_ref(), stream);
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    });
    Ok(FileServer { stop })
}

fn answer(root: &Path, guarded: Option<&Guarded>, stream: TcpStream) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // Of the headers, only Authorization matters.
    let mut authorization = None;
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("authorization")
        {
            authorization = Some(value.trim().to_string());
        }
        line.clear();
    }
    let mut out = stream;
    let mut words = request.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or("/"));
    if guarded.is_some_and(|g| !g.admits(target, authorization.as_deref())) {
        write!(
            out,
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"arktos-private\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        return out.flush();
    }
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
    fn guarded_paths_need_the_credentials() {
        let guarded = Guarded {
            prefix: "/private/".into(),
            user: "u".into(),
            password: "p".into(),
        };
        assert!(guarded.admits("/guest.qcow2", None));
        assert!(!guarded.admits("/private/guest.qcow2", None));
        assert!(!guarded.admits("//private/guest.qcow2", None));
        assert!(!guarded.admits("/private/guest.qcow2", Some("Basic dTp4")));
        assert!(guarded.admits("/private/guest.qcow2", Some("Basic dTpw")));
    }

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
