//! Splicing over in-memory pipes: half-close both ways, failure, idle timeout.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a failed test.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

use super::*;

#[tokio::test]
async fn a_client_that_shuts_down_its_write_side_still_receives_the_whole_answer() {
    let (client, client_far) = duplex(1024);
    let (upstream, upstream_far) = duplex(1024);
    let spliced = tokio::spawn(splice(client_far, upstream, Duration::from_secs(5)));
    let (mut client, mut upstream_far) = (client, upstream_far);
    client.write_all(b"request").await.unwrap();
    client.shutdown().await.unwrap();
    // The backend sees the request and then the end of stream...
    let mut got = Vec::new();
    upstream_far.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"request");
    // ...and answers after it, which still reaches the client.
    let reader = tokio::spawn(async move {
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        answer
    });
    upstream_far.write_all(&vec![7u8; 100_000]).await.unwrap();
    upstream_far.shutdown().await.unwrap();
    assert_eq!(reader.await.unwrap().len(), 100_000);
    let spliced = spliced.await.unwrap();
    assert_eq!(spliced.end, SpliceEnd::Closed);
    assert_eq!((spliced.from_client, spliced.to_client), (7, 100_000));
}

#[tokio::test(start_paused = true)]
async fn no_byte_either_way_for_the_idle_timeout_ends_the_splice() {
    let (mut client, client_far) = duplex(1024);
    let (upstream, mut upstream_far) = duplex(1024);
    let started = Instant::now();
    let spliced = tokio::spawn(splice(client_far, upstream, Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_secs(6)).await;
    client.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    upstream_far.read_exact(&mut one).await.unwrap();
    let spliced = spliced.await.unwrap();
    assert_eq!(spliced.end, SpliceEnd::IdleTimeout);
    // Activity at 6 s pushed the deadline to 16 s.
    assert_eq!(started.elapsed().as_secs(), 16);
    // Both sides were dropped: the client sees the end.
    let mut rest = Vec::new();
    assert_eq!(client.read_to_end(&mut rest).await.unwrap(), 0);
}

#[tokio::test]
async fn a_side_that_goes_away_mid_write_ends_the_splice_as_failed() {
    let (mut client, client_far) = duplex(16);
    let (upstream, upstream_far) = duplex(16);
    drop(upstream_far);
    let spliced = tokio::spawn(splice(client_far, upstream, Duration::ZERO));
    client.write_all(b"data").await.unwrap();
    let spliced = spliced.await.unwrap();
    assert!(
        matches!(&spliced.end, SpliceEnd::Failed(why) if why.starts_with("writing to the upstream")),
        "{spliced:?}"
    );
}
