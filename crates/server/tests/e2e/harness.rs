//! The test harness itself: a PostgreSQL run without PostgreSQL fails instead of quietly
//! passing on SQLite.

use std::process::Command;

use myelin_test_support::TestServer;

#[tokio::test]
async fn a_postgres_run_without_a_database_fails_loudly() {
    let exe = std::env::current_exe().expect("the test binary");
    // This binary again, running only `starts_a_server`, as `MYELIN_TEST_DB=postgres` with no
    // database to use.
    let output = tokio::task::spawn_blocking(move || {
        Command::new(exe)
            .args(["--exact", "harness::starts_a_server", "--ignored", "--nocapture"])
            .env("MYELIN_TEST_DB", "postgres")
            .env_remove("TEST_POSTGRES_URL")
            .env_remove("MYELIN_REQUIRE_POSTGRES")
            .output()
            .expect("the test binary runs")
    })
    .await
    .unwrap();
    let printed =
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the run passed without PostgreSQL:\n{printed}");
    assert!(printed.contains("1 failed"), "the one test ran and failed:\n{printed}");
    assert!(
        printed.contains("MYELIN_TEST_DB=postgres but TEST_POSTGRES_URL is not set"),
        "the failure says why:\n{printed}"
    );
}

#[tokio::test]
#[ignore = "run in a child process by a_postgres_run_without_a_database_fails_loudly"]
async fn starts_a_server() {
    let server = TestServer::start().await;
    server.client().get("/_matrix/client/versions").await.expect(200);
    server.stop().await;
}
