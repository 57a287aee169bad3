//! Where the metrics go: the `/metrics` listener (`--metrics-addr`) and
//! the textfile for node_exporter (`--textfile`).

use std::sync::Arc;

use crate::{CLASSIC_CONTENT_TYPE, LedgerSide, Metrics, OPENMETRICS_CONTENT_TYPE};

/// Binds `addr` (`--metrics-addr`; an error names the flag and the
/// address) and serves `metrics` there until `shutdown`, on a task of its
/// own.
pub async fn spawn_metrics(
    addr: std::net::SocketAddr,
    metrics: Arc<Metrics>,
    side: LedgerSide,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("--metrics-addr {addr}: {e}")))?;
    tracing::info!(%addr, "serving metrics at /metrics");
    Ok(tokio::spawn(serve_metrics(
        listener,
        metrics,
        Some(side),
        shutdown,
    )))
}

/// Serves `GET /metrics` on `listener` until `shutdown`: nothing else (any
/// other path is 404, any other method 405).
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    side: Option<LedgerSide>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::{HeaderMap, StatusCode, header};
    let state = Arc::new((metrics, side));
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(
                |axum::extract::State(state): axum::extract::State<
                    Arc<(Arc<Metrics>, Option<LedgerSide>)>,
                >,
                 headers: HeaderMap| async move {
                    let openmetrics = headers
                        .get(header::ACCEPT)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|a| a.contains("application/openmetrics-text"));
                    let body = state.0.scrape(state.1.as_ref(), openmetrics).await;
                    let kind = if openmetrics {
                        OPENMETRICS_CONTENT_TYPE
                    } else {
                        CLASSIC_CONTENT_TYPE
                    };
                    ([(header::CONTENT_TYPE, kind)], body)
                },
            ),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "only GET /metrics is served here\n") })
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Writes `text` to `path` so that a reader (node_exporter's textfile
/// collector) never sees it half-written: a temporary file beside it,
/// flushed, then renamed over it.
pub fn write_textfile(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "metrics".into());
    // node_exporter reads only `*.prom`: the temporary name is not read.
    let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

#[cfg(test)]
mod textfile_tests {
    use super::write_textfile;

    /// A reader looping while the file is rewritten with one of two texts
    /// (long enough to take several writes) finds only one or the other,
    /// whole, never a mix or a prefix.
    #[test]
    fn a_reader_never_sees_the_textfile_half_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inflight.prom");
        let a = "inflight_a 1\n".repeat(20_000);
        let b = "inflight_b 2\n".repeat(30_000);
        write_textfile(&path, &a).unwrap();
        let done = std::sync::atomic::AtomicBool::new(false);
        let reads = std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                let mut reads = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let text = std::fs::read_to_string(&path).unwrap();
                    assert!(
                        text == a || text == b,
                        "a torn read of {} bytes",
                        text.len()
                    );
                    reads += 1;
                }
                reads
            });
            for i in 0..200 {
                write_textfile(&path, if i % 2 == 0 { &b } else { &a }).unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            reader.join().unwrap()
        });
        assert!(reads > 0);
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file is left behind");
    }
}
