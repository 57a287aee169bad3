//! systemd's readiness and liveness notifications (`sd_notify`), for
//! `Type=notify` units with `WatchdogSec=`.
//!
//! The protocol is one datagram per message to the Unix socket named by
//! `NOTIFY_SOCKET` (a path, or an abstract name after `@`), and the
//! watchdog's interval is `WATCHDOG_USEC`. That is all a service needs, so
//! it is written here rather than taken from a crate: a few lines of std,
//! no `unsafe`, nothing to audit. Without `NOTIFY_SOCKET` (not under
//! systemd, or not a notify unit) every call does nothing.
//!
//! The variables are not passed on: executors are started with them
//! removed ([`NOTIFY_VARIABLES`]), so that a program that speaks the
//! protocol itself cannot tell systemd the runner is ready or alive.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::time::Duration;

/// The variables systemd sets for a notify service; removed from
/// executors' environments.
pub const NOTIFY_VARIABLES: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// Where notifications go, if anywhere.
#[derive(Debug, Default)]
pub struct Notifier {
    socket: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From the environment systemd sets: `NOTIFY_SOCKET`, and
    /// `WATCHDOG_USEC` when `WATCHDOG_PID` is unset or this process's.
    /// A socket that cannot be used is said once and leaves a notifier
    /// that does nothing.
    pub fn from_env() -> Self {
        let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
            return Self::default();
        };
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .filter(|_| {
                std::env::var("WATCHDOG_PID")
                    .ok()
                    .is_none_or(|pid| pid.trim() == std::process::id().to_string())
            })
            .and_then(|usec| usec.trim().parse::<u64>().ok())
            .filter(|usec| *usec > 0)
            .map(Duration::from_micros);
        match Self::to(&socket.to_string_lossy(), watchdog) {
            Ok(notifier) => notifier,
            Err(error) => {
                tracing::warn!(%error, "NOTIFY_SOCKET cannot be used; systemd will not hear from this process");
                Self::default()
            }
        }
    }

    /// Notifications to `socket` (a path, or `@name` for an abstract
    /// socket), with a watchdog of `watchdog` if any: what systemd would
    /// set, given by hand (tests).
    pub fn to(socket: &str, watchdog: Option<Duration>) -> io::Result<Self> {
        let address = match socket.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name.as_bytes())?
            }
            None => SocketAddr::from_pathname(PathBuf::from(socket))?,
        };
        Ok(Self {
            socket: Some((UnixDatagram::unbound()?, address)),
            watchdog,
        })
    }

    /// How often systemd wants to hear that this process is alive, if it
    /// does.
    pub fn watchdog(&self) -> Option<Duration> {
        self.socket.as_ref().and(self.watchdog)
    }

    /// Start-up is done (`READY=1`), with a status line.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// The process is alive and making progress (`WATCHDOG=1`).
    pub fn alive(&self) {
        self.send("WATCHDOG=1");
    }

    /// The process is stopping (`STOPPING=1`).
    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    fn send(&self, message: &str) {
        if let Some((socket, address)) = &self.socket
            && let Err(error) = socket.send_to_addr(message.as_bytes(), address)
        {
            tracing::debug!(%error, message, "could not notify systemd");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_the_socket_as_datagrams() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::to(path.to_str().unwrap(), Some(Duration::from_secs(10))).unwrap();
        assert_eq!(notifier.watchdog(), Some(Duration::from_secs(10)));
        notifier.ready("up");
        notifier.alive();
        notifier.stopping();
        let mut buf = [0u8; 256];
        let mut got = Vec::new();
        for _ in 0..3 {
            let n = listener.recv(&mut buf).unwrap();
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        assert_eq!(got, ["READY=1\nSTATUS=up", "WATCHDOG=1", "STOPPING=1"]);
    }

    #[test]
    fn without_a_socket_nothing_is_sent_and_no_watchdog_is_kept() {
        let notifier = Notifier::default();
        assert_eq!(notifier.watchdog(), None);
        notifier.ready("up");
        notifier.alive();
    }
}
