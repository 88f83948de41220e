//! Connecting to NATS the same way in every service.

use std::time::Duration;

/// Connects as `name`. Reconnects quickly (100 ms, growing to 1 s): a
/// nats-server restart should cost seconds, not async-nats's default
/// back-off of up to several seconds per attempt, because discovery, the
/// quota service and every NATS route wait on it.
pub async fn connect(
    url: &str,
    name: &str,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    async_nats::ConnectOptions::new()
        .name(name)
        .reconnect_delay_callback(|attempts| Duration::from_millis(100 * attempts.min(10) as u64))
        .connect(url)
        .await
}
