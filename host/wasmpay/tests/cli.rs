//! The `wasmpay` binary as a user runs it: `demo`, and `serve` driven by `account` and `pay`,
//! stopped with SIGTERM.
#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use wasmpay_tests::NatsServer;

const BINARY: &str = env!("CARGO_BIN_EXE_wasmpay");

fn run(args: &[&str], token: &str) -> Output {
    Command::new(BINARY).args(args).env("WASMPAY_ADMIN_TOKEN", token).output().unwrap()
}

/// Starts `wasmpay serve` through `launcher` (the binary, or a wrapper given the binary) with a
/// ledger in `workdir` and a free HTTP port, and waits until it listens; the node and its
/// HTTP address. Its log goes to `workdir/serve.log`.
fn spawn_serve(mut launcher: Command, nats: &NatsServer, workdir: &std::path::Path, extra: &[&str]) -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let http = format!("127.0.0.1:{port}");
    let db = format!("sqlite://{}", workdir.join("node.db").display());
    let node = launcher
        .args(["serve", "--nats", &nats.url(), "--db", &db, "--http", &http])
        .args(extra)
        .env("WASMPAY_ADMIN_TOKEN", "secret")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(workdir.join("serve.log")).unwrap())
        .spawn()
        .unwrap();
    // Ready, not only listening: a new deployment is bound after a grace period
    // (docs/cluster.md), and the node serves nothing before.
    let started = Instant::now();
    while !ready(&http) {
        assert!(started.elapsed() < Duration::from_secs(30), "node did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    (node, http)
}

/// Whether the node at `http` answers `/readyz` with 200.
fn ready(http: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(http) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut answer = String::new();
    stream.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").is_ok()
        && stream.read_to_string(&mut answer).is_ok()
        && answer.starts_with("HTTP/1.1 200")
}

/// Opens `alice` (funded with 50.00 EUR) and `shop` through the node at `api`, as a user does.
fn open_alice_and_shop(api: &str) {
    for args in [
        vec!["account", "open", "alice", "--currency", "EUR", "--api", api],
        vec!["account", "open", "shop", "--currency", "EUR", "--api", api],
        vec!["account", "deposit", "alice", "--amount", "50.00", "--api", api],
    ] {
        let output = run(&args, "secret");
        assert!(output.status.success(), "{args:?}: {}", text(&output));
    }
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
    // The lifecycle: a partial capture with its prorated fee, a void, an expiry, a partial
    // refund, each shown with the payer's balances after it.
    for step in [
        "captured, fee 2.48     cust-life: posted 420.00, held 0.00, available 420.00",
        "voided                 cust-life: posted 420.00, held 0.00, available 420.00",
        "expired                cust-life: posted 420.00, held 0.00, available 420.00",
        "refunded, fee 0.73 back cust-life: posted 445.00",
        "settled                cust-life: posted 395.00",
        "settle: 50.00 EUR for 4 ACME shares",
        "cust-life-acme now holds 4 ACME",
        "pays 25000.00 TZS -> approved, fee 250.00 TZS paid by the sender; amina: posted 74750.00 TZS",
        "(Safaricom KE) pays TZS -> declined (currency_not_of_country)",
        "200.00 EUR pays 215.55 USD at 1.077784",
        "pays with the quote -> approved, fee 2.00 EUR (two lines) paid by her; studio-nyc gets 215.55 USD, as quoted",
        "pays with the same quote again -> declined (quote_used)",
        "pays 50.00 EUR without a quote -> approved at the rate of the moment: 53.88 USD",
        "pays into North Korea -> declined (sanctioned_country)",
        "FX position: _fx_EUR 250.00 EUR, _fx_USD -269.43 USD",
        "EUR 0, ",
    ] {
        assert!(printed.contains(step), "{step} missing from\n{printed}");
    }
    assert!(printed.contains("-> OK"), "{printed}");
}

/// The cluster demo: three `serve` processes on PostgreSQL, one killed mid-run, and the
/// clients' view matches the ledger.
#[test]
fn the_cluster_demo_kills_a_node_and_loses_and_doubles_nothing() {
    let output = run(&["demo", "--nodes", "3", "--payments", "150"], "");
    let printed = text(&output);
    assert!(output.status.success(), "{printed}");
    assert!(printed.contains("killed demo-n3 with SIGKILL"), "{printed}");
    assert!(printed.contains("lost 0, doubled 0"), "{printed}");
    assert!(printed.contains("-> OK"), "{printed}");
}

#[test]
fn serve_takes_commands_and_stops_cleanly_on_sigterm() {
    let nats = NatsServer::start(None).expect("nats-server");
    let workdir = tempfile::tempdir().unwrap();
    let (mut node, http) = spawn_serve(Command::new(BINARY), &nats, workdir.path(), &["--node-id", "cli-test"]);
    let api = format!("http://{http}");
    open_alice_and_shop(&api);
    let denied = run(&["account", "show", "alice", "--api", &api], "wrong");
    assert!(text(&denied).contains("401"), "{}", text(&denied));
    assert_eq!(denied.status.code(), Some(5), "a refused token exits 5: {}", text(&denied));
    let too_fine = run(&["account", "deposit", "alice", "--amount", "0.005", "--api", &api], "secret");
    assert_eq!(too_fine.status.code(), Some(3), "{}", text(&too_fine));
    assert!(text(&too_fine).contains("has 3 decimals; this currency has 2"), "{}", text(&too_fine));

    let nats_url = nats.url();
    let pay = |extra: &[&str]| {
        let mut args = vec!["pay", "--nats", &nats_url, "--from", "alice", "--to", "shop", "--amount", "10.00"];
        args.extend_from_slice(&["--currency", "EUR", "--method", "card", "--detail", "pan=4242424242424242"]);
        args.extend_from_slice(&["--detail", "expiry=12/30"]);
        args.extend_from_slice(extra);
        run(&args, "")
    };
    let paid = pay(&["--id", "cli-1"]);
    assert!(paid.status.success(), "{}", text(&paid));
    // For people: the id, the outcome, the money in major units, who decided.
    for line in ["payment cli-1: approved (ok)", "10.00 EUR, fee 0.54 EUR borne by the payee", "decided by card@0.1.0"]
    {
        assert!(text(&paid).contains(line), "{line}: {}", text(&paid));
    }
    // For scripts: the reply itself; a replay is the same bytes, and still exits 0.
    let replayed = pay(&["--id", "cli-1", "-o", "json"]);
    let reply: serde_json::Value = serde_json::from_str(text(&replayed).trim()).expect("one JSON reply");
    assert_eq!((reply["status"].as_str(), reply["amount"].as_u64()), (Some("approved"), Some(1_000)), "{reply}");
    // Declined (an expired card): exit 3.
    let declined = run(
        &["pay", "--nats", &nats_url, "--from", "alice", "--to", "shop", "--amount-minor", "100", "--currency", "EUR"],
        "",
    );
    assert_eq!(declined.status.code(), Some(2), "no --method is a usage error: {}", text(&declined));
    let expired = pay(&["--id", "cli-expired", "--detail", "expiry=01/20"]);
    assert_eq!(expired.status.code(), Some(3), "{}", text(&expired));
    assert!(text(&expired).contains("declined (plugin_declined: card_expired)"), "{}", text(&expired));
    let submitted = pay(&["--id", "cli-2", "--submit"]);
    assert!(submitted.status.success(), "{}", text(&submitted));

    let shown = run(&["account", "show", "alice", "--api", &api], "secret");
    assert!(text(&shown).contains("alice    customer  30.00 EUR  0.00 EUR  30.00 EUR"), "{}", text(&shown));
    let shown = run(&["-o", "json", "account", "show", "alice", "--api", &api], "secret");
    assert!(text(&shown).contains("\"balance\":3000"), "{}", text(&shown));
    assert!(text(&shown).contains("\"held\":0") && text(&shown).contains("\"available\":3000"), "{}", text(&shown));
    assert!(!text(&shown).contains('\u{1b}'), "no colour off a terminal: {}", text(&shown));
    // The statement: a page of two entries, then the rest after its cursor.
    let first = run(&["account", "statement", "alice", "--limit", "2", "--api", &api], "secret");
    let printed = text(&first);
    assert!(first.status.success(), "{printed}");
    assert!(printed.contains("account alice (EUR): posted 30.00, held 0.00, available 30.00"), "{printed}");
    assert!(printed.contains("deposit") && printed.contains("+50.00"), "{printed}");
    assert!(printed.contains("cli-1") && printed.contains("-10.00"), "{printed}");
    let after = printed.split("--after ").nth(1).map(str::trim).expect("a cursor for the next page");
    let issued = run(&["client-key", "issue", "shop-app", "--api", &api], "secret");
    assert!(issued.status.success() && text(&issued).contains("secret (shown this once): wpk_"), "{}", text(&issued));
    let listed = run(&["client-key", "list", "--api", &api], "secret");
    assert!(text(&listed).contains("shop-app") && !text(&listed).contains("wpk_"), "{}", text(&listed));
    let rest = run(&["account", "statement", "alice", "--after", after, "--json", "--api", &api], "secret");
    let page: serde_json::Value = serde_json::from_str(text(&rest).trim()).expect("JSON");
    assert_eq!(page["entries"].as_array().map(Vec::len), Some(1), "{page}");
    assert_eq!((page["entries"][0]["payment"].as_str(), page["next"].as_str()), (Some("cli-2"), None), "{page}");

    // A client pays over HTTP with a key of its own.
    let issue = run(&["client-key", "issue", "shop-app", "--api", &api, "-o", "json"], "secret");
    assert!(issue.status.success(), "{}", text(&issue));
    let issued: serde_json::Value = serde_json::from_slice(&issue.stdout).unwrap();
    let body = serde_json::json!({"id": "cli-key-1", "payer": "alice", "payee": "shop", "amount": 100, "currency": "EUR",
                                  "method": "card", "details": {"pan": "4242424242424242", "expiry": "12/30"}});
    let url = format!("{api}/v1/payments");
    let paid_with_key = tokio::runtime::Runtime::new().unwrap().block_on(wasmpay_node::client::http_call(
        hyper::Method::POST,
        &url,
        issued["secret"].as_str().unwrap(),
        Some(body),
    ));
    assert_eq!(paid_with_key.unwrap().0.as_u16(), 201);
    let killed = Command::new("kill").args(["-TERM", &node.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = node.wait().unwrap();
    assert!(status.success(), "serve exits 0 after SIGTERM: {status}");
    // Every call of the API is in the log: who called what, and how it ended; never a secret.
    let log = std::fs::read_to_string(workdir.path().join("serve.log")).unwrap();
    let calls: Vec<&str> = log.lines().filter(|line| line.contains("api call")).collect();
    // A client key's call names the key's id.
    let key_id = issued["id"].as_str().unwrap();
    assert!(
        calls.iter().any(|line| line.contains(&format!("client_key={key_id}"))
            && line.contains("caller=\"client\"")
            && line.contains("path=/v1/payments")),
        "{log}"
    );
    assert!(!log.contains(issued["secret"].as_str().unwrap()), "a secret is never logged");
    assert!(
        calls.iter().any(|line| line.contains("path=/v1/accounts/alice")
            && line.contains("caller=\"wrong token\"")
            && line.contains("status=401")),
        "{log}"
    );
    assert!(
        calls.iter().any(|line| line.contains("method=POST")
            && line.contains("caller=\"admin\"")
            && line.contains("status=201")),
        "{log}"
    );
    assert!(!log.contains("secret") && !log.contains("wrong\n"), "no token in the log: {log}");
}

/// A node with few file descriptors (`prlimit`) and many idle clients: at the cap a new
/// connection replaces the idlest one, so the node never holds more than the cap and never
/// runs out of descriptors (where its accept loop
/// used to spin at 100 % CPU), the idle ones within the cap are closed after the header
/// timeout, and the health check gets through.
#[test]
fn idle_clients_cannot_exhaust_the_nodes_file_descriptors() {
    let nats = NatsServer::start(None).expect("nats-server");
    let workdir = tempfile::tempdir().unwrap();
    let config = workdir.path().join("wasmpay.toml");
    std::fs::write(&config, "[http]\nmax_connections = 16\nheader_read_timeout_ms = 1000\n").unwrap();
    let mut limited = Command::new("prlimit");
    limited.args(["--nofile=64:64", BINARY]);
    let config = config.display().to_string();
    let (mut node, http) = spawn_serve(limited, &nats, workdir.path(), &["--config", &config]);
    let idle: Vec<std::net::TcpStream> = (0..100).filter_map(|_| std::net::TcpStream::connect(&http).ok()).collect();
    let started = Instant::now();
    let healthy = loop {
        let probe = std::net::TcpStream::connect(&http).and_then(|mut stream| {
            use std::io::{Read, Write};
            stream.set_read_timeout(Some(Duration::from_millis(500)))?;
            stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer)?;
            Ok(answer)
        });
        if probe.is_ok_and(|answer| answer.starts_with("HTTP/1.1 200")) {
            break true;
        }
        if started.elapsed() > Duration::from_secs(10) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(idle);
    let _ = Command::new("kill").args(["-TERM", &node.id().to_string()]).status();
    let status = node.wait().unwrap();
    assert!(healthy, "the health check never got through");
    assert!(status.success(), "serve exits 0 after SIGTERM: {status}");
}

/// A SQLite file serves one node: a second `serve` on it exits at once with `ledger_in_use`,
/// naming the file (before, it joined as a second node and the two took turns at the file's
/// write lock), while `wasmpay ledger verify` still reads it beside the node. The lock dies
/// with its process: after a SIGKILL the next node opens the file.
#[test]
fn a_second_node_on_one_sqlite_file_is_refused() {
    const EXIT_BOUND: Duration = Duration::from_secs(30);
    let nats = NatsServer::start(None).expect("nats-server");
    let workdir = tempfile::tempdir().unwrap();
    let (mut first, _) = spawn_serve(Command::new(BINARY), &nats, workdir.path(), &["--node-id", "first"]);
    let db = format!("sqlite://{}", workdir.path().join("node.db").display());
    let mut second = Command::new(BINARY)
        .args(["serve", "--nats", &nats.url(), "--db", &db, "--http", "127.0.0.1:0", "--node-id", "second"])
        .env("WASMPAY_ADMIN_TOKEN", "secret")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while second.try_wait().unwrap().is_none() {
        if started.elapsed() > EXIT_BOUND {
            second.kill().unwrap();
            panic!("a second node on the SQLite file of a running one still runs after {EXIT_BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let refused = second.wait_with_output().unwrap();
    let printed = text(&refused);
    assert!(!refused.status.success(), "{printed}");
    let path = workdir.path().join("node.db").display().to_string();
    assert!(
        printed.contains("ledger_in_use") && printed.contains(&path) && printed.contains("PostgreSQL"),
        "{printed}"
    );

    let verified = run(&["ledger", "verify", "--db", &db], "");
    assert!(verified.status.success() && text(&verified).contains("ledger OK"), "{}", text(&verified));

    first.kill().unwrap(); // SIGKILL: no close, the OS releases the lock
    first.wait().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let next = wasmpay_ledger::Ledger::open(&db).await.expect("the next node opens the file of a killed one");
        next.close().await;
    });
}

/// The compiled plugin cache is only an optimisation: with a cache directory that cannot be
/// opened (a file stands where its parent should be), `serve` warns once, naming the path and
/// the cause, and serves (before, it exited).
#[test]
fn serve_runs_without_a_cache_directory_it_cannot_open() {
    let nats = NatsServer::start(None).expect("nats-server");
    let workdir = tempfile::tempdir().unwrap();
    let blocker = workdir.path().join("not-a-directory");
    std::fs::write(&blocker, b"").unwrap();
    let cache = blocker.join("cache");
    let config = workdir.path().join("wasmpay.toml");
    std::fs::write(&config, format!("[sandbox]\ncache_dir = \"{}\"\n", cache.display())).unwrap();
    let log = workdir.path().join("serve.log");
    let mut launcher = Command::new("sh");
    launcher.args(["-c", &format!("exec \"$0\" \"$@\" 2>{}", log.display()), BINARY]);
    let config = config.display().to_string();
    let (mut node, http) = spawn_serve(launcher, &nats, workdir.path(), &["--config", &config]);
    let ready = format!("http://{http}/readyz");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let started = Instant::now();
    while runtime
        .block_on(wasmpay_node::client::http_call(hyper::Method::GET, &ready, "", None))
        .map_or(true, |(status, _)| status.as_u16() != 200)
    {
        assert!(started.elapsed() < Duration::from_secs(30), "never ready without its cache");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("kill").args(["-TERM", &node.id().to_string()]).status();
    assert!(node.wait().unwrap().success());
    let logged = std::fs::read_to_string(&log).unwrap();
    let warnings: Vec<&str> = logged.lines().filter(|line| line.contains("compiled plugin cache")).collect();
    assert_eq!(warnings.len(), 1, "{logged}");
    assert!(warnings[0].contains("WARN") && warnings[0].contains(&cache.display().to_string()), "{logged}");
}

/// `wasmpay ledger verify` passes sound books and names the first broken invariant.
#[test]
fn currencies_lists_every_active_iso_4217_currency_with_its_exponent() {
    let output = run(&["currencies"], "");
    let printed = text(&output);
    assert!(output.status.success(), "{printed}");
    // Columns aligned for people: compared word by word.
    let lines: Vec<String> =
        printed.lines().map(|line| line.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    assert!(lines.len() > 150, "{printed}");
    for expected in ["EUR 2 Euro", "JPY 0 Japanese yen", "KWD 3 Kuwaiti dinar", "TZS 2 Tanzanian shilling"] {
        assert!(lines.iter().any(|line| line == expected), "{expected} in {printed}");
    }
    assert!(!lines.iter().any(|line| line.starts_with("XAU") || line.starts_with("HRK")), "{printed}");
    let json = text(&run(&["currencies", "--json"], ""));
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap_or_default()).unwrap();
    assert_eq!((first["code"].as_str(), first["exponent"].as_u64()), (Some("AED"), Some(2)), "{json}");
}

/// An FX plugin's fixtures name a counter currency and expect a rate: `plugin test` asks the
/// plugin (with the manifest's configuration) and compares the rate, markup applied.
#[test]
fn plugin_test_checks_an_fx_plugins_rates() {
    let dir = tempfile::tempdir().unwrap();
    let component = dir.path().join("fx.wasm");
    std::fs::write(&component, wasmpay_plugin_artifacts::FX_TABLE).unwrap();
    let manifest = r#"name = "fx-table"
version = "0.1.0"
methods = []
config = { "EUR/USD" = "1.0832", markup_bps = "50" }

[[fixture]]
name = "euros to dollars less 50 bp"
payment = { amount = 10000, currency = "EUR", counter_currency = "USD" }
expect = { verdict = "approved", rate = "1.077784" }

[[fixture]]
name = "a pair the table lacks"
payment = { amount = 10000, currency = "EUR", counter_currency = "GBP" }
expect = { verdict = "declined", code = "pair_not_quoted" }

[[fixture]]
name = "a wrong expectation"
payment = { amount = 10000, currency = "USD", counter_currency = "EUR" }
expect = { verdict = "approved", rate = "0.92" }
"#;
    std::fs::write(dir.path().join("fx.toml"), manifest).unwrap();
    let output = run(&["plugin", "test", component.to_str().unwrap()], "");
    let printed = text(&output);
    assert!(!output.status.success(), "{printed}");
    assert!(printed.contains("methods none (an FX plugin)"), "{printed}");
    assert!(printed.contains("approved, rate 1.077784"), "{printed}");
    assert!(printed.contains("declined with `pair_not_quoted`"), "{printed}");
    // 1 / 1.0832 to 12 decimals, less 50 bp.
    assert!(printed.contains("expected approved, rate 0.92, got approved, rate 0.91857459379536"), "{printed}");
    assert!(printed.contains("2 passed, 1 failed"), "{printed}");
}

/// `plugin test` runs a version's fixtures without a node: every verdict with its time, every
/// failure (not only the first), exit 1 when any failed.
#[test]
fn plugin_test_runs_every_fixture_and_lists_every_failure() {
    let dir = tempfile::tempdir().unwrap();
    let component = dir.path().join("card.wasm");
    std::fs::write(&component, wasmpay_plugin_artifacts::CARD).unwrap();
    std::fs::write(dir.path().join("card.toml"), wasmpay_plugin_artifacts::CARD_MANIFEST).unwrap();
    let output = run(&["plugin", "test", component.to_str().unwrap()], "");
    let printed = text(&output);
    assert!(output.status.success(), "{printed}");
    assert!(printed.contains("ok    a valid card is approved"), "{printed}");
    assert!(printed.contains("approved, fee 315 borne by the payee"), "{printed}");
    assert!(printed.contains("3 passed, 0 failed"), "{printed}");

    // Two wrong expectations: both reported, with what the plugin answered instead.
    let wrong = wasmpay_plugin_artifacts::CARD_MANIFEST
        .replace("fee = 315", "fee = 300")
        .replace("code = \"card_expired\"", "code = \"expired\"");
    let manifest = dir.path().join("wrong.toml");
    std::fs::write(&manifest, wrong).unwrap();
    let output = run(&["plugin", "test", component.to_str().unwrap(), "--manifest", manifest.to_str().unwrap()], "");
    let printed = text(&output);
    assert!(!output.status.success(), "{printed}");
    assert!(printed.contains("expected approved, fee 300 borne by the payee, got approved, fee 315"), "{printed}");
    assert!(printed.contains("expected declined with `expired`, got declined with `card_expired`"), "{printed}");
    assert!(printed.contains("1 passed, 2 failed"), "{printed}");

    // What it is: the world, the imports the sandbox offers, what it describes.
    let printed = text(&run(&["plugin", "inspect", component.to_str().unwrap()], ""));
    assert!(printed.contains("world: payment-method-with-refunds"), "{printed}");
    assert!(printed.contains("describe: card 0.1.0, methods card, currencies EUR USD GBP CHF JPY"), "{printed}");
    assert!(
        printed.lines().any(|line| line.contains("wasmpay:plugin/log@0.1.2") && line.ends_with("offered")),
        "{printed}"
    );
    let old = dir.path().join("old.wasm");
    std::fs::write(&old, wasmpay_plugin_artifacts::CONTRACT_0_1_0).unwrap();
    let printed = text(&run(&["plugin", "inspect", old.to_str().unwrap()], ""));
    assert!(printed.contains("world: payment-method (") && printed.contains("refunds keep their fee"), "{printed}");

    // A manifest that does not describe the component is refused as a node would refuse it.
    let other = wasmpay_plugin_artifacts::CARD_MANIFEST.replace("name = \"card\"", "name = \"wallet\"");
    std::fs::write(&manifest, other).unwrap();
    let output = run(&["plugin", "test", component.to_str().unwrap(), "--manifest", manifest.to_str().unwrap()], "");
    assert!(text(&output).contains("manifest_mismatch"), "{}", text(&output));
}

#[test]
fn ledger_verify_finds_a_tampered_balance() {
    let workdir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", workdir.path().join("ledger.db").display());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let ledger = wasmpay_ledger::Ledger::open(&db).await.unwrap();
        let currency = "EUR".parse().unwrap();
        let id = wasmpay_protocol::routing::AccountId::new("alice").unwrap();
        let floor = wasmpay_protocol::money::MinorUnits::ZERO;
        let account = ledger.open_account(&wasmpay_ledger::NewAccount { id, currency, floor }, 0).await.unwrap();
        let amount = wasmpay_protocol::money::MinorUnits(5_000);
        ledger.deposit(&wasmpay_protocol::PaymentId::new("fund").unwrap(), &account, amount, 0).await.unwrap();
        ledger.close().await;
    });
    let verified = run(&["ledger", "verify", "--db", &db], "");
    assert!(verified.status.success() && text(&verified).contains("ledger OK"), "{}", text(&verified));

    runtime.block_on(async {
        let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
        sqlx::query("UPDATE accounts SET balance = balance + 1 WHERE id = 'alice'").execute(&pool).await.unwrap();
        pool.close().await;
    });
    let tampered = run(&["ledger", "verify", "--db", &db], "");
    assert_eq!(tampered.status.code(), Some(6), "broken books exit 6: {}", text(&tampered));
    assert!(text(&tampered).contains("conservation"), "{}", text(&tampered));

    let missing = run(&["ledger", "verify", "--db", "sqlite:///nonexistent/ledger.db"], "");
    assert_eq!(missing.status.code(), Some(5), "no ledger there exits 5: {}", text(&missing));
    assert!(text(&missing).contains("no ledger"), "{}", text(&missing));
}

/// The rest of the exit-code contract (docs/operators.md), and what a script can rely on
/// without a node: a NATS server nobody runs is 5, a bad log filter is 5 before anything
/// runs, a mistyped command is 2 with a suggestion; JSON log lines; completion scripts.
#[test]
fn exit_codes_logs_and_completions_are_a_contract() {
    let unreachable = run(
        &[
            "quote",
            "--nats",
            "nats://127.0.0.1:1",
            "--from",
            "a",
            "--to",
            "b",
            "--amount",
            "1.00",
            "--currency",
            "EUR",
            "--counter-currency",
            "USD",
        ],
        "",
    );
    assert_eq!(unreachable.status.code(), Some(5), "{}", text(&unreachable));
    assert!(text(&unreachable).contains("nats://127.0.0.1:1"), "the error names the server: {}", text(&unreachable));
    let filtered = Command::new(BINARY).args(["currencies"]).env("RUST_LOG", "info,=nonsense").output().unwrap();
    assert_eq!(filtered.status.code(), Some(5), "{}", text(&filtered));
    assert!(text(&filtered).contains("is not a log filter"), "{}", text(&filtered));
    // Input the command can check itself is a usage error, before any server is asked.
    for (flag, bad) in [("--currency", "EURO"), ("--from", "not an account")] {
        let mut args = vec!["pay", "--nats", "nats://127.0.0.1:1", "--from", "a", "--to", "b", "--amount", "1"];
        args.extend(["--currency", "EUR", "--method", "card"]);
        let at = args.iter().position(|arg| *arg == flag).unwrap_or_default();
        args[at + 1] = bad;
        let refused = run(&args, "");
        assert_eq!(refused.status.code(), Some(2), "{flag} {bad}: {}", text(&refused));
        assert!(text(&refused).contains(bad), "{}", text(&refused));
    }
    let typo = run(&["serv"], "");
    assert_eq!(typo.status.code(), Some(2), "{}", text(&typo));
    assert!(text(&typo).contains("similar subcommand exists: 'serve'"), "{}", text(&typo));
    let listed = run(&["-o", "json", "currencies"], "");
    let first: serde_json::Value =
        serde_json::from_str(text(&listed).lines().next().unwrap_or_default()).expect("one JSON object per line");
    assert_eq!(first["exponent"].as_u64(), Some(2), "{first}");
    let completions = run(&["completions", "bash"], "");
    assert!(completions.status.success() && text(&completions).contains("_wasmpay()"), "{}", text(&completions));

    // A log line as JSON: `ledger verify` on a database that is not there warns nothing, so ask
    // `serve` to start on a port that is taken and read its first line.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let workdir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", workdir.path().join("ledger.db").display());
    let nats = NatsServer::start(None).expect("nats-server");
    let serve = Command::new(BINARY)
        .args([
            "--log-format",
            "json",
            "serve",
            "--http",
            &port,
            "--db",
            &db,
            "--nats",
            &nats.url(),
            "--no-plugin-cache",
        ])
        .current_dir(workdir.path())
        .env("WASMPAY_ADMIN_TOKEN", "secret")
        .output()
        .unwrap();
    let logged = String::from_utf8_lossy(&serve.stderr);
    let line: serde_json::Value = serde_json::from_str(logged.lines().next().unwrap_or_default())
        .unwrap_or_else(|_| panic!("a JSON log line: {logged}"));
    assert!(line["level"].is_string() && line["fields"]["message"].is_string(), "{line}");
    assert_eq!(serve.status.code(), Some(5), "a port in use exits 5: {logged}");
    assert!(logged.contains(&format!("cannot listen on {port}")), "{logged}");

    // A NATS server without JetStream: one clear error at once, not half a minute of retries.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut plain = Command::new("nats-server").args(["-a", "127.0.0.1", "-p", &free.to_string()]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let serve = Command::new(BINARY)
        .args(["serve", "--http", "127.0.0.1:0", "--db", &db, "--nats", &format!("nats://127.0.0.1:{free}")])
        .current_dir(workdir.path())
        .env("WASMPAY_ADMIN_TOKEN", "secret")
        .output()
        .unwrap();
    let _ = plain.kill();
    let _ = plain.wait();
    assert_eq!(serve.status.code(), Some(5), "{}", text(&serve));
    assert!(text(&serve).contains("start it with `nats-server -js`"), "{}", text(&serve));
    assert!(started.elapsed() < Duration::from_secs(10), "told after {:?}", started.elapsed());
}

/// `wasmpay bench` starts what it needs (NATS, a node on each backend, a scratch PostgreSQL
/// schema), measures every scenario beside its baseline, and reports every row with no failed
/// request.
#[test]
fn bench_measures_every_scenario_beside_its_baseline() {
    let args = ["bench", "--payments", "300", "--in-flight", "8", "--payers", "20", "--ledger-transfers", "500"];
    // Floors any working node clears: what is checked here is that every floor finds its row.
    let floors = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(floors.path(), "bench-floor: sqlite 8 0.001\nbench-floor: postgres 8 0.001\n").unwrap();
    let floors = floors.path().to_str().unwrap();
    let output = run(&[&args[..], &["--pgbench-seconds", "0", "--json", "--floors", floors]].concat(), "");
    assert!(output.status.success(), "{}", text(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let rows = report["rows"].as_array().unwrap();
    let scenarios: Vec<(&str, &str)> =
        rows.iter().map(|row| (row["backend"].as_str().unwrap_or("-"), row["scenario"].as_str().unwrap())).collect();
    for backend in ["sqlite", "postgres"] {
        for scenario in [
            "bus_limit",
            "uniform",
            "hot_payee",
            "authorize_capture",
            "pay_refund",
            "settlement",
            "open_loop",
            "ledger_alone",
        ] {
            assert!(scenarios.contains(&(backend, scenario)), "{backend} {scenario} missing: {scenarios:?}");
        }
    }
    for scenario in ["plugins_on_path", "plugin_load_compiled", "plugin_load_cached"] {
        assert!(scenarios.contains(&("-", scenario)), "{scenario} missing: {scenarios:?}");
    }
    // A row on the payment's path for every built-in method.
    let on_path: Vec<&str> =
        rows.iter().filter(|row| row["scenario"] == "plugins_on_path").filter_map(|row| row["load"].as_str()).collect();
    assert_eq!(
        on_path,
        [
            "card, 1 thread",
            "wallet, 1 thread",
            "mobile_money, 1 thread",
            "cross_border, 1 thread",
            "fx-table rate, 1 thread"
        ],
        "{rows:?}"
    );
    for row in rows {
        assert_eq!(row["failed"].as_u64(), Some(0), "{row}");
        assert!(row["requests"].as_u64().unwrap() > 0 && row["per_second"].as_u64().unwrap() > 0, "{row}");
    }
    let ratio = |scenario: &str, to: &str| {
        rows.iter()
            .filter(|row| row["scenario"] == scenario)
            .all(|row| row["ratios"].as_array().unwrap().iter().any(|ratio| ratio["to"] == to))
    };
    assert!(ratio("uniform", "bus") && ratio("hot_payee", "uniform"), "{rows:?}");
    assert!(ratio("authorize_capture", "uniform") && ratio("pay_refund", "uniform"), "{rows:?}");
    assert!(ratio("settlement", "uniform"), "{rows:?}");
    // The node runs in a process of its own, and every row through it says what it cost the
    // node's process and the NATS server's per request; paying costs the node CPU.
    for row in rows.iter().filter(|row| row["backend"].is_string() && row["scenario"] != "ledger_alone") {
        assert!(row["node_cpu_ns_per_request"].is_u64() && row["nats_cpu_ns_per_request"].is_u64(), "{row}");
        if row["scenario"] == "uniform" {
            assert!(row["node_cpu_ns_per_request"].as_u64() > Some(0), "{row}");
        }
    }
    assert!(text(&output).contains("sqlite end to end at 8 in flight"), "{}", text(&output));
}

/// The tutorial that opens docs/plugins.md, run as written: its `sh` block's commands, one by
/// one, in a temporary directory, against a node of its own (`WASMPAY_API`, `NATS_URL` and
/// `WASMPAY_ADMIN_TOKEN` point them at it), ending with a payment the new plugin approved.
#[test]
fn the_plugin_tutorial_runs_as_written() {
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/plugins.md");
    let docs = std::fs::read_to_string(docs).unwrap();
    let tutorial = docs.split("\n## Tutorial").nth(1).expect("docs/plugins.md has a Tutorial section");
    let block = tutorial.split("```sh\n").nth(1).and_then(|rest| rest.split("```").next()).expect("an sh block");
    let commands: Vec<&str> =
        block.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#')).collect();
    assert!(commands.len() >= 6, "{commands:?}");

    let nats = NatsServer::start(None).expect("nats-server");
    let workdir = tempfile::tempdir().unwrap();
    let (mut node, http) = spawn_serve(Command::new(BINARY), &nats, workdir.path(), &[]);
    // The plugin crate builds in a target directory kept between runs, like the workspace's.
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/plugin-tutorial");
    let mut cwd = workdir.path().to_owned();
    let mut last = String::new();
    for command in commands {
        let words: Vec<&str> = command.split_whitespace().collect();
        if let ["cd", directory] = words.as_slice() {
            cwd = cwd.join(directory);
            continue;
        }
        assert_eq!(words.first(), Some(&"wasmpay"), "the tutorial runs only wasmpay: {command}");
        let started = Instant::now();
        let output = Command::new(BINARY)
            .args(&words[1..])
            .current_dir(&cwd)
            .env("WASMPAY_API", format!("http://{http}"))
            .env("NATS_URL", nats.url())
            .env("WASMPAY_ADMIN_TOKEN", "secret")
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .unwrap();
        last = text(&output);
        println!("$ {command}   ({} ms)\n{last}", started.elapsed().as_millis());
        assert!(output.status.success(), "`{command}` failed:\n{last}");
    }
    node.kill().unwrap();
    node.wait().unwrap();

    // A version bumped in Cargo.toml only (what `describe` reports) is refused at build, not
    // found later at a push.
    let cargo_toml = cwd.join("Cargo.toml");
    let bumped =
        std::fs::read_to_string(&cargo_toml).unwrap().replacen("version = \"0.1.0\"", "version = \"0.1.1\"", 1);
    std::fs::write(&cargo_toml, bumped).unwrap();
    let output = Command::new(BINARY)
        .args(["plugin", "build"])
        .current_dir(&cwd)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    let printed = text(&output);
    assert!(!output.status.success() && printed.contains("Cargo.toml says version 0.1.1"), "{printed}");
    for line in [": approved (ok)", "25.00 EUR, fee 0.38 EUR borne by the payer", "decided by voucher@0.1.0"] {
        assert!(last.contains(line), "{line} missing from the payment's output:\n{last}");
    }
}

/// One span an OTLP receiver got: which process sent it, its name, ids (hex) and attributes.
#[derive(Clone, Debug)]
struct ReceivedSpan {
    service: String,
    name: String,
    trace: String,
    id: String,
    parent: String,
    attributes: Vec<(String, String)>,
}

impl ReceivedSpan {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(name, _)| name == key).map(|(_, value)| value.as_str())
    }
}

/// An OTLP/HTTP trace receiver on a free port: it decodes each export's protobuf as a
/// collector does and keeps the spans.
async fn otlp_receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<ReceivedSpan>>>) {
    use http_body_util::BodyExt as _;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use prost::Message as _;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let spans = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = spans.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let kept = kept.clone();
            let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let kept = kept.clone();
                async move {
                    assert_eq!(request.uri().path(), "/v1/traces");
                    let body = request.into_body().collect().await?.to_bytes();
                    let export = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
                    let text = |value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>| match value
                        .and_then(|value| value.value.as_ref())
                    {
                        Some(Any::StringValue(text)) => text.clone(),
                        Some(Any::IntValue(number)) => number.to_string(),
                        other => format!("{other:?}"),
                    };
                    for resource in export.resource_spans {
                        let attributes = resource.resource.map(|resource| resource.attributes).unwrap_or_default();
                        let service = attributes
                            .iter()
                            .find(|attribute| attribute.key == "service.name")
                            .map(|attribute| text(attribute.value.as_ref()))
                            .unwrap_or_default();
                        for span in resource.scope_spans.into_iter().flat_map(|scope| scope.spans) {
                            let hex = |bytes: &[u8]| bytes.iter().map(|byte| format!("{byte:02x}")).collect::<String>();
                            kept.lock().unwrap().push(ReceivedSpan {
                                service: service.clone(),
                                name: span.name,
                                trace: hex(&span.trace_id),
                                id: hex(&span.span_id),
                                parent: hex(&span.parent_span_id),
                                attributes: span
                                    .attributes
                                    .iter()
                                    .map(|attribute| (attribute.key.clone(), text(attribute.value.as_ref())))
                                    .collect(),
                            });
                        }
                    }
                    let mut answer = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
                    answer.headers_mut().insert("content-type", "application/x-protobuf".parse().unwrap());
                    Ok::<_, hyper::Error>(answer)
                }
            });
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    (url, spans)
}

/// Issue 19: one payment is one trace, from the client's span through the node's payment
/// span, its plugin calls and its ledger commit, exported over OTLP by both processes; the
/// payment's event carries the trace on; an HTTP client's `traceparent` is the parent of what
/// the node does for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_is_one_trace_from_the_client_to_the_ledger() {
    use futures::StreamExt as _;

    let (endpoint, spans) = otlp_receiver().await;
    let nats = NatsServer::start(None).expect("nats-server");
    let workdir = tempfile::tempdir().unwrap();
    let mut launcher = Command::new(BINARY);
    launcher.env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint).env("OTEL_BSP_SCHEDULE_DELAY", "100");
    let (mut node, http) = spawn_serve(launcher, &nats, workdir.path(), &["--node-id", "traced"]);
    let api = format!("http://{http}");
    open_alice_and_shop(&api);
    let watcher = async_nats::connect(nats.url()).await.unwrap();
    let mut events = watcher.subscribe("wasmpay.events.>").await.unwrap();
    watcher.flush().await.unwrap();

    let nats_url = nats.url();
    let mut args = vec!["pay", "--nats", &nats_url, "--id", "traced-1", "--from", "alice", "--to", "shop"];
    args.extend_from_slice(&["--amount", "10.00", "--currency", "EUR", "--method", "card"]);
    args.extend_from_slice(&["--detail", "pan=4242424242424242", "--detail", "expiry=12/30"]);
    let paid = Command::new(BINARY)
        .args(&args)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_SERVICE_NAME", "shop-client")
        .output()
        .unwrap();
    assert!(paid.status.success(), "{}", text(&paid));
    let event = tokio::time::timeout(Duration::from_secs(10), events.next()).await.unwrap().unwrap();
    let traceparent = event.headers.as_ref().and_then(|headers| headers.get("traceparent")).expect("a traced event");

    // Through the API, under a trace of the caller's own.
    let (trace, caller) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let mut request = std::net::TcpStream::connect(&http).unwrap();
    let body = r#"{"id":"traced-2","payer":"alice","payee":"shop","amount":500,"currency":"EUR","method":"card","details":{"pan":"4242424242424242","expiry":"12/30"}}"#;
    let head = format!(
        "POST /v1/payments HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret\r\nContent-Type: application/json\r\n\
         traceparent: 00-{trace}-{caller}-01\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    std::io::Write::write_all(&mut request, head.as_bytes()).unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut request, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");

    let named = |spans: &[ReceivedSpan], name: &str, payment: &str| {
        spans
            .iter()
            .find(|span| span.name == name && span.attribute("payment").or(span.attribute("id")) == Some(payment))
            .cloned()
    };
    let started = Instant::now();
    let (client, payment, http_span, api_payment) = loop {
        let seen = spans.lock().unwrap().clone();
        let found = (
            named(&seen, "wasmpay pay", "traced-1"),
            named(&seen, "payment", "traced-1"),
            seen.iter().find(|span| span.name == "http request" && span.trace == trace).cloned(),
            named(&seen, "payment", "traced-2"),
        );
        if let (Some(client), Some(payment), Some(http_span), Some(api_payment)) = found {
            break (client, payment, http_span, api_payment);
        }
        assert!(started.elapsed() < Duration::from_secs(20), "spans missing; received: {seen:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Node spans come in batches: the children may follow their parent's batch.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = spans.lock().unwrap().clone();
    node.kill().unwrap();
    let _ = node.wait();

    assert_eq!(client.service, "shop-client");
    assert_eq!(payment.service, "wasmpay");
    assert_eq!(payment.trace, client.trace, "the node's payment continues the client's trace");
    assert_eq!(payment.parent, client.id, "{seen:#?}");
    let children: Vec<&ReceivedSpan> = seen.iter().filter(|span| span.parent == payment.id).collect();
    let exports: Vec<&str> =
        children.iter().filter(|span| span.name == "plugin call").filter_map(|span| span.attribute("export")).collect();
    assert_eq!(exports, ["validate", "quote-fee"], "{children:#?}");
    assert!(children.iter().all(|span| span.trace == client.trace));
    assert!(children.iter().any(|span| span.name == "ledger commit"), "{children:#?}");
    assert!(traceparent.as_str().contains(&client.trace), "the event carries the trace on: {traceparent:?}");

    assert_eq!((http_span.parent.as_str(), http_span.service.as_str()), (caller, "wasmpay"));
    assert_eq!(api_payment.trace, trace, "{seen:#?}");
    assert_eq!(api_payment.parent, http_span.id, "the HTTP call forwarded its trace over NATS");
}
