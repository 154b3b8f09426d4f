//! Cancellation: requests and service calls abandoned at every point.
//!
//! A client may drop any request at any `.await`. Every new write endpoint gets a test built
//! from these helpers: [`hang_up_after`] abandons a real HTTP request on a raw socket,
//! [`poll_at_most`] / [`cancel_at_every_await`] drop a service future after each of its
//! suspension points in turn, and [`assert_streams_settle`] checks that no stream position was
//! left in flight (which would freeze every sync behind it).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use myelin_service::Services;
use tokio::io::AsyncWriteExt;

/// Polls `future` at most `polls` times, then drops it (as hyper drops a request's future when
/// its client goes away). Returns the output if it completed within those polls. A poll that
/// returns `Pending` waits for the future's own wake-up (that is what makes the count "awaits
/// reached"), so a future that is never woken, e.g. one queued on a lock the test holds, never
/// returns: to check that something does *not* wait, poll it once with
/// `futures::poll!`-style `std::future::poll_fn` instead.
pub async fn poll_at_most<F: Future>(future: F, polls: usize) -> Option<F::Output> {
    let mut future = pin!(future);
    let mut left = polls;
    std::future::poll_fn(move |cx| {
        if left == 0 {
            return Poll::Ready(None);
        }
        left -= 1;
        match future.as_mut().poll(cx) {
            Poll::Ready(output) => Poll::Ready(Some(output)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// Runs a fresh `make()` future and drops it after 1, 2, 3, ... polls, until one run completes
/// (or `max_runs` runs were cut short, which fails the test). Returns how many runs were
/// dropped before completing, and the completing run's output.
pub async fn cancel_at_every_await<F, Fut>(mut make: F, max_runs: usize) -> (usize, Fut::Output)
where
    F: FnMut() -> Fut,
    Fut: Future,
{
    for polls in 1..=max_runs {
        if let Some(output) = poll_at_most(make(), polls).await {
            return (polls - 1, output);
        }
    }
    panic!("the future did not complete within {max_runs} polls");
}

/// Sends one HTTP/1.1 request on a fresh connection and closes it `after` the last byte of the
/// body was written, without reading the response.
pub async fn hang_up_after(
    addr: SocketAddr,
    method: &str,
    path: &str,
    access_token: Option<&str>,
    body: &[u8],
    after: Duration,
) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect to the test server");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(token) = access_token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("write the request head");
    stream.write_all(body).await.expect("write the request body");
    if !after.is_zero() {
        // Not synchronisation: when the client hangs up is the thing the tests vary.
        tokio::time::sleep(after).await;
    }
    // Dropping the socket closes it: the server sees its client gone.
    drop(stream);
}

/// Waits (up to 30 s) until no position of any stream is in flight, then checks that every
/// stream still publishes: a fresh position on each is current at once.
pub async fn assert_streams_settle(services: &Services) {
    let streams = [
        ("events", &services.rooms.stream),
        ("account_data", &services.streams.account_data),
        ("receipts", &services.streams.receipts),
        ("presence", &services.streams.presence),
        ("typing", &services.streams.typing),
        ("to_device", &services.streams.to_device),
        ("device_lists", &services.streams.device_lists),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for (name, stream) in streams {
        while stream.in_flight() > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "stream {name}: {} positions still in flight",
                stream.in_flight()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let position = stream.bump();
        assert_eq!(stream.current(), position, "stream {name} publishes a fresh position");
    }
}
