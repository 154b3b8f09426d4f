//! Writes run to completion.
//!
//! hyper drops a request's future when its client goes away, at whichever `.await` the
//! handler is in. A handler that reads can stop anywhere; one that writes must not stop
//! halfway (a room created without its state, a registration without its device). So every
//! request whose method may write runs on a task of its own: dropping the connection detaches
//! the task instead of cancelling it. What a write takes inside the service (stream positions,
//! locks) is also released by guards, for writers that are not HTTP requests.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::Method;

/// Route layer: runs `POST`, `PUT`, `DELETE` and `PATCH` requests on their own task.
pub async fn run_writes_to_completion(request: Request, next: Next) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(request).await;
    }
    match tokio::spawn(next.run(request)).await {
        Ok(response) => response,
        // The outer panic layer answers for a handler that panicked on its task.
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => {
            tracing::error!(%error, "a request task was cancelled");
            crate::error::matrix_error_response(
                &myelin_core::MatrixError::unknown("Internal server error")
                    .with_kind(myelin_core::ErrorKind::Internal),
            )
        }
    }
}
