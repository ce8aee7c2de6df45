//! Running one watch: replay the history after the client's resourceVersion, then stream live
//! changes as newline-delimited JSON events, with bookmarks when asked, until the client goes
//! away, `timeoutSeconds` passes (a clean end), or the emulator breaks the connection.
//!
//! A bookmark must never claim a version whose change the client has not been sent. The store
//! delivers each change to this watch's channel under its lock before the version moves on,
//! so reading the version under that lock and then draining the channel before writing the
//! bookmark keeps the promise.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval};

use crate::body::{BoxError, ChannelBody};
use crate::shared::Shared;
use crate::status::ApiError;
use crate::store::{Change, WatchMessage, WatchStart};

/// How a watch presents its objects and when it ends.
pub(crate) struct WatchParams {
    /// The `apiVersion` of the URL (objects are shown in it).
    pub(crate) api_version: String,
    /// The kind, for bookmarks.
    pub(crate) kind: String,
    /// Bookmark period, when the client allowed bookmarks.
    pub(crate) bookmarks: Option<Duration>,
    /// `timeoutSeconds`.
    pub(crate) timeout: Option<Duration>,
}

/// A watch event line: `{"type": .., "object": ..}` and a newline.
pub(crate) fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// The body of a watch answered with one 410 ERROR event, as etcd-backed servers do.
pub(crate) fn expired_body(error: &ApiError) -> ChannelBody {
    let (tx, rx) = mpsc::channel(1);
    let _ = tx.try_send(Ok(event_line("ERROR", &error.to_status())));
    ChannelBody(rx)
}

/// Starts the task that runs the watch; returns its body.
pub(crate) fn start(shared: Arc<Shared>, start: WatchStart, params: WatchParams) -> ChannelBody {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(run(shared, start, params, tx));
    ChannelBody(rx)
}

type Sink = mpsc::Sender<Result<Bytes, BoxError>>;

/// Whether the watch goes on after handling `message`.
async fn forward(message: Option<WatchMessage>, params: &WatchParams, tx: &Sink) -> bool {
    match message {
        Some(WatchMessage::Change(change)) => send_change(&change, params, tx).await,
        Some(WatchMessage::Break) | None => {
            let _ = tx
                .send(Err("watch connection broken by the emulator".into()))
                .await;
            false
        }
    }
}

async fn send_change(change: &Change, params: &WatchParams, tx: &Sink) -> bool {
    let mut object = change.object.clone();
    object["apiVersion"] = json!(params.api_version);
    let line = event_line(change.change.as_str(), &object);
    tx.send(Ok(line)).await.is_ok()
}

async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn run(shared: Arc<Shared>, start: WatchStart, params: WatchParams, tx: Sink) {
    let WatchStart { replay, mut live } = start;
    for change in replay {
        if !send_change(&change, &params, &tx).await {
            return;
        }
    }
    let deadline = params.timeout.map(|t| Instant::now() + t);
    let mut bookmarks = params
        .bookmarks
        .map(|period| tokio::time::interval_at(Instant::now() + period, period));
    loop {
        tokio::select! {
            message = live.recv() => {
                if !forward(message, &params, &tx).await {
                    return;
                }
            }
            () = tick(&mut bookmarks) => {
                let rv = shared.store().resource_version();
                while let Ok(message) = live.try_recv() {
                    if !forward(Some(message), &params, &tx).await {
                        return;
                    }
                }
                let bookmark = json!({
                    "kind": params.kind,
                    "apiVersion": params.api_version,
                    "metadata": {"resourceVersion": rv.to_string()},
                });
                if tx.send(Ok(event_line("BOOKMARK", &bookmark))).await.is_err() {
                    return;
                }
            }
            () = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => return,
            () = tx.closed() => return,
        }
    }
}
