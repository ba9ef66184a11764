//! The `wasmpay` binary as a user runs it: `demo`, and `serve` driven by `account` and `pay`,
//! stopped with SIGTERM.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use wasmpay_tests::NatsServer;

const BINARY: &str = env!("CARGO_BIN_EXE_wasmpay");

fn run(args: &[&str], token: &str) -> Output {
    Command::new(BINARY).args(args).env("WASMPAY_ADMIN_TOKEN", token).output().unwrap()
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[test]
fn demo_pays_through_nats_and_the_books_balance() {
    // A private server: another node on the shared 127.0.0.1:4222 would answer these payments too.
    let nats = NatsServer::start(None).expect("nats-server");
    let output = run(&["demo", "--payments", "60", "--nats", &nats.url()], "");
    let printed = text(&output);
    assert!(output.status.success(), "{printed}");
    assert!(printed.contains("approved  ok"), "{printed}");
    assert!(printed.contains("plugin_declined (card_expired)"), "{printed}");
    assert!(printed.contains("idempotent replays: 3/3"), "{printed}");
    assert!(printed.contains("-> OK"), "{printed}");
}

#[test]
fn serve_takes_commands_and_stops_cleanly_on_sigterm() {
    let nats = NatsServer::start(None).expect("nats-server");
    let workdir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let http = format!("127.0.0.1:{port}");
    let api = format!("http://{http}");
    let db = format!("sqlite://{}", workdir.path().join("node.db").display());
    let mut node = Command::new(BINARY)
        .args(["serve", "--nats", &nats.url(), "--db", &db, "--http", &http, "--node-id", "cli-test"])
        .env("WASMPAY_ADMIN_TOKEN", "secret")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !wasmpay_tests::answers(http.parse().unwrap()) {
        assert!(started.elapsed() < Duration::from_secs(30), "node did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    for args in [
        vec!["account", "open", "alice", "--currency", "EUR", "--api", &api],
        vec!["account", "open", "shop", "--currency", "EUR", "--api", &api],
        vec!["account", "deposit", "alice", "--amount", "5000", "--api", &api],
    ] {
        let output = run(&args, "secret");
        assert!(output.status.success(), "{args:?}: {}", text(&output));
    }
    let denied = run(&["account", "show", "alice", "--api", &api], "wrong");
    assert!(!denied.status.success() && text(&denied).contains("401"), "{}", text(&denied));

    let nats_url = nats.url();
    let pay = |extra: &[&str]| {
        let mut args = vec!["pay", "--nats", &nats_url, "--from", "alice", "--to", "shop", "--amount", "1000"];
        args.extend_from_slice(&["--currency", "EUR", "--method", "card", "--detail", "pan=4242424242424242"]);
        args.extend_from_slice(&["--detail", "expiry=12/30"]);
        args.extend_from_slice(extra);
        run(&args, "")
    };
    let paid = pay(&["--id", "cli-1"]);
    assert!(paid.status.success(), "{}", text(&paid));
    assert!(text(&paid).contains("\"status\":\"approved\""), "{}", text(&paid));
    let submitted = pay(&["--id", "cli-2", "--submit"]);
    assert!(submitted.status.success(), "{}", text(&submitted));

    let shown = run(&["account", "show", "alice", "--api", &api], "secret");
    assert!(text(&shown).contains("\"balance\":3000"), "{}", text(&shown));

    let killed = Command::new("kill").args(["-TERM", &node.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = node.wait().unwrap();
    assert!(status.success(), "serve exits 0 after SIGTERM: {status}");
}
