//! The node's local log: what it does, every action with its app, outcome and execution
//! time, in daily files under `logs/` in the home folder, the last 14 kept. Standard
//! error gets the same lines. `RUST_LOG` filters both. Secrets are never logged.

use std::path::Path;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, fmt};

/// Days of log files kept.
pub const KEEP_DAYS: usize = 14;

/// The default filter when `RUST_LOG` is not set.
const DEFAULT_FILTER: &str = "info,quinn=warn,wasmtime=warn,cranelift=warn";

/// A daily-rotating file appender in `dir`, keeping [`KEEP_DAYS`] files.
pub fn appender(dir: &Path) -> std::io::Result<RollingFileAppender> {
    std::fs::create_dir_all(dir)?;
    RollingFileAppender::builder()
        .rotation(Rotation::DAILY)
        .filename_prefix("desktop-node")
        .filename_suffix("log")
        .max_log_files(KEEP_DAYS)
        .build(dir)
        .map_err(std::io::Error::other)
}

/// Logs to standard error and, when `dir` is given, to rotating files there. Keep the
/// returned guard alive for the life of the program: dropping it flushes the file.
pub fn init(dir: Option<&Path>) -> std::io::Result<Option<WorkerGuard>> {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| DEFAULT_FILTER.into());
    let stderr = fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter());
    let Some(dir) = dir else {
        tracing_subscriber::registry().with(stderr).init();
        return Ok(None);
    };
    let (writer, guard) = tracing_appender::non_blocking(appender(dir)?);
    let file = fmt::layer()
        .with_ansi(false)
        .with_writer(writer)
        .with_filter(filter());
    // The last lines, in memory, for a crash report (`crate::crash`).
    let tail = crate::crash::tail_layer().with_filter(filter());
    tracing_subscriber::registry()
        .with(stderr)
        .with(file)
        .with(tail)
        .init();
    Ok(Some(guard))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_land_in_a_dated_file() {
        let dir = std::env::temp_dir().join(format!("aisa-logs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (writer, guard) = tracing_appender::non_blocking(appender(&dir).unwrap());
        let subscriber =
            tracing_subscriber::registry().with(fmt::layer().with_ansi(false).with_writer(writer));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(app_id = "hello-ai", elapsed_ms = 12, "action finished");
        });
        drop(guard);
        let files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        assert_eq!(files.len(), 1);
        let name = files[0].file_name().to_string_lossy().into_owned();
        assert!(
            name.starts_with("desktop-node.") && name.ends_with(".log"),
            "{name}"
        );
        let text = std::fs::read_to_string(files[0].path()).unwrap();
        assert!(
            text.contains("action finished") && text.contains("elapsed_ms=12"),
            "{text}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
