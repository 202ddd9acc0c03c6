//! `scorecam healthcheck`: a minimal HTTP/1.1 GET of /healthz with std only (the image has
//! no curl), for the container's HEALTHCHECK.

use std::io::{Read, Write};
use std::net::ToSocketAddrs;
use std::time::Duration;

use super::CliError;

pub fn check(addr: &str, timeout: Duration) -> Result<(), CliError> {
    let fail = |m: String| CliError::Invalid(m);
    // A server bound to all interfaces is checked on loopback.
    let addr = addr.replace("0.0.0.0", "127.0.0.1").replace("[::]", "[::1]");
    let target = addr
        .to_socket_addrs()
        .map_err(|e| fail(format!("{addr}: {e}")))?
        .next()
        .ok_or_else(|| fail("no address".into()))?;
    let mut stream =
        std::net::TcpStream::connect_timeout(&target, timeout).map_err(|e| fail(format!("{addr}: {e}")))?;
    let io = |e: std::io::Error| fail(format!("{addr}: {e}"));
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    write!(stream, "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").map_err(io)?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).map_err(io)?;
    let status = String::from_utf8_lossy(&head[..n]);
    if status.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(fail(format!("unhealthy: {}", status.lines().next().unwrap_or("no response"))))
    }
}
