//! `switchboard bench-upstream`: an HTTP upstream for the proxy workload that answers every
//! POST with its own body after a fixed delay, the way a typical application API would.

use axum::body::Bytes;
use axum::routing::post;
use axum::Router;
use std::time::Duration;

pub async fn serve(listen: std::net::SocketAddr, delay: Duration) -> anyhow::Result<()> {
    let app = Router::new().route(
        "/{*method}",
        post(move |body: Bytes| async move {
            tokio::time::sleep(delay).await;
            ([("content-type", "application/json")], body)
        }),
    );
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(%listen, delay_ms = delay.as_millis() as u64, "bench upstream listening");
    axum::serve(listener, app).await?;
    Ok(())
}
