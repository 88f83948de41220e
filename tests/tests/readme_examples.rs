//! README's examples, run as a new user runs them: every grpcurl, curl,
//! `buf curl` and nats command of README's code blocks, verbatim and in
//! README order, through `bash -c` against a fresh `scripts/demo`, with the
//! variables README tells the user to set. And the NATS side of that demo
//! through the nats CLI: both micro services, their endpoints, instances and
//! request counts.
//!
//! The tools are Go programs that Debian does not package (`.ci/run` installs
//! them): without grpcurl (or nats, for the second test) a test says so and
//! passes, unless `NORDLYS_REQUIRE_TOOLS=1`.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use nordlys_proto::pb::nordlys::v1::{
    project_service_client::ProjectServiceClient, CreateProjectRequest, GetProjectRequest, Project,
};
use nordlys_tests::bearer;
use nordlys_tests::demo::{self, repo_root, Demo};
use serde_json::Value;

/// How long one example may take (the creates wait for both regions).
const CALL: Duration = Duration::from_secs(30);
/// How long a stream that follows events live runs before its Ctrl-C.
const STREAM_FOR: Duration = Duration::from_secs(5);
/// The demo's default addresses, which README's examples name.
const README_GRPC: &str = "127.0.0.1:50051";
const README_HTTP: &str = "127.0.0.1:8080";

// ---------------------------------------------------------------------------
// Tools

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

fn tools_required() -> bool {
    std::env::var("NORDLYS_REQUIRE_TOOLS").is_ok_and(|v| v == "1")
}

/// Whether `tool` can be used; a missing one fails the test under
/// `NORDLYS_REQUIRE_TOOLS=1` and is otherwise reported.
fn have(tool: &str, what: &str) -> bool {
    if on_path(tool) {
        return true;
    }
    assert!(
        !tools_required(),
        "{tool} is not on PATH and NORDLYS_REQUIRE_TOOLS=1 ({what}; .ci/run shows how to install it)"
    );
    // Straight to stderr: the test harness would hide a println of a
    // passing test.
    let _ = writeln!(
        std::io::stderr(),
        "skipping {what}: {tool} is not on PATH (.ci/run shows how to install it)"
    );
    false
}

// ---------------------------------------------------------------------------
// The demo

// ---------------------------------------------------------------------------
// README's code blocks

/// One shell command of README's indented code blocks.
#[derive(Debug)]
struct Example {
    /// README's line number of its first line.
    line: usize,
    /// Its text as README has it (without the block's indentation), lines
    /// continued by a backslash or an open quote included.
    text: String,
    /// Its trailing comment, if any (`KEY=nlk_...   # printed by ...`).
    trailing: String,
    /// The comment lines right after it: the answer README shows for it.
    answer: Vec<String>,
}

impl Example {
    fn program(&self) -> &str {
        self.text.split_whitespace().next().unwrap_or("")
    }

    /// `NAME=value` or `export NAME=value` alone (one shell word): a
    /// variable to set.
    fn assignment(&self) -> Option<&str> {
        let text = self.text.strip_prefix("export ").unwrap_or(&self.text);
        let (name, value) = text.split_once('=')?;
        let is_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        (is_name && !unquoted_space(value)).then_some(name)
    }

    /// Calls that follow events live until Ctrl-C.
    fn is_stream(&self) -> bool {
        self.text.contains("WatchEvents") || self.text.contains("events:watch")
    }
}

/// The code blocks' lines: indented by four spaces (or more, in a list),
/// after a blank line or another such line; fenced blocks are not examples.
fn code_lines(readme: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let (mut in_block, mut fenced, mut previous_blank) = (false, false, true);
    for (i, line) in readme.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        let blank = line.trim().is_empty();
        let indented = line.starts_with("    ");
        if fenced {
            previous_blank = blank;
            continue;
        }
        if indented && (in_block || previous_blank) {
            in_block = true;
            out.push((i + 1, line.to_string()));
        } else if blank && in_block {
            out.push((i + 1, String::new()));
        } else {
            in_block = false;
        }
        previous_blank = blank;
    }
    out
}

/// Scans `line` as bash would: returns whether it ends inside a quote
/// (given whether it starts in one) and where an unquoted comment starts.
fn scan(line: &str, mut quote: Option<char>) -> (Option<char>, Option<usize>) {
    let mut chars = line.char_indices();
    let mut word_start = true;
    while let Some((i, c)) = chars.next() {
        match (quote, c) {
            (Some('\''), '\'') => quote = None,
            (Some('\''), _) => {}
            (Some('"'), '"') => quote = None,
            (Some(_), '\\') | (None, '\\') => {
                chars.next();
            }
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '#') if word_start => return (None, Some(i)),
            (None, _) => {}
        }
        word_start = quote.is_none() && (c == ' ' || c == '\t' || c == ';');
    }
    (quote, None)
}

/// README's shell commands in order, with their comments.
fn examples(readme: &str) -> Vec<Example> {
    let lines = code_lines(readme);
    let mut out: Vec<Example> = Vec::new();
    let mut current: Option<(usize, String, Option<char>)> = None;
    // Comment lines count as an answer only right after a command.
    let mut after_command = false;
    for (number, raw) in lines {
        let indent = raw.len() - raw.trim_start().len();
        let line = &raw[indent.min(4)..];
        if let Some((start, mut text, quote)) = current.take() {
            text.push('\n');
            text.push_str(line);
            let (quote, _) = scan(line, quote);
            if quote.is_some() || line.ends_with('\\') {
                current = Some((start, text, quote));
            } else {
                out.push(Example {
                    line: start,
                    text,
                    trailing: String::new(),
                    answer: Vec::new(),
                });
                after_command = true;
            }
            continue;
        }
        let trimmed = line.trim();
        if trimmed.is_empty() {
            after_command = false;
            continue;
        }
        if let Some(comment) = trimmed.strip_prefix('#') {
            // An answer starts with JSON or grpcurl's `ERROR:`, and goes on
            // while indented; any other comment is about what follows.
            let answer = comment.trim();
            match out.last_mut() {
                Some(last)
                    if after_command
                        && (answer.starts_with('{')
                            || answer.starts_with("ERROR:")
                            || !last.answer.is_empty() && comment.starts_with("  ")) =>
                {
                    last.answer.push(answer.to_string());
                }
                _ => after_command = false,
            }
            continue;
        }
        after_command = false;
        let (quote, comment) = scan(trimmed, None);
        if quote.is_some() || trimmed.ends_with('\\') {
            current = Some((number, trimmed.to_string(), quote));
            continue;
        }
        let (text, trailing) = match comment {
            Some(at) => (trimmed[..at].trim_end(), trimmed[at + 1..].trim()),
            None => (trimmed, ""),
        };
        out.push(Example {
            line: number,
            text: text.to_string(),
            trailing: trailing.to_string(),
            answer: Vec::new(),
        });
        after_command = true;
    }
    assert!(current.is_none(), "README ends inside a command");
    out
}

// ---------------------------------------------------------------------------
// Running them

struct Ran {
    /// None: still running when stopped (a stream).
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `text` through `bash -e -c` (each of `a; b` must succeed) in its own
/// process group with `vars`; a stream gets Ctrl-C (SIGINT to the group)
/// after [`STREAM_FOR`].
fn run(text: &str, vars: &BTreeMap<String, String>, stream: bool, dir: &Path) -> Ran {
    let mut child = Command::new("bash")
        .args(["-e", "-c"])
        .arg(text)
        .envs(vars)
        .current_dir(dir)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash");
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = read(Box::new(child.stdout.take().expect("stdout")));
    let stderr = read(Box::new(child.stderr.take().expect("stderr")));
    let group = Pid::from_raw(child.id() as i32);
    let limit = if stream { STREAM_FOR } else { CALL };
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status.code().unwrap_or(-1));
        }
        if started.elapsed() > limit {
            let _ = killpg(group, Signal::SIGINT);
            std::thread::sleep(Duration::from_millis(300));
            let _ = killpg(group, Signal::SIGKILL);
            let _ = child.wait();
            assert!(stream, "`{text}` did not finish in {CALL:?}");
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ran {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// The JSON values of an answer: one document, several in a row (grpcurl's
/// streams, newline-delimited JSON) or the `data:` lines of Server-Sent
/// Events.
fn json_values(text: &str) -> Result<Vec<Value>, serde_json::Error> {
    if text.lines().any(|l| l.starts_with("data:")) {
        return text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| serde_json::from_str(d.trim()))
            .collect();
    }
    serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .collect()
}

/// A google.rpc.Status with a code other than OK.
fn error_code(value: &Value) -> Option<i64> {
    let code = value.get("code")?.as_i64()?;
    (code != 0 && value.get("message").is_some()).then_some(code)
}

/// Whether `text` has whitespace outside quotes (more than one word).
fn unquoted_space(text: &str) -> bool {
    let mut quote = None;
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '\'' | '"') => quote = Some(c),
            (None, c) if c.is_whitespace() => return true,
            _ => {}
        }
    }
    false
}

/// Whether an unquoted `|` sends the command's output to another program.
fn piped(text: &str) -> bool {
    let mut quote = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '\'' | '"') => quote = Some(c),
            (_, '\\') => {
                chars.next();
            }
            (None, '|') => return true,
            _ => {}
        }
    }
    false
}

/// Checks one example's answer against what README promises: success, or
/// the failure README shows right after it.
fn check(example: &Example, ran: &Ran) {
    let at = format!(
        "README.md:{} `{}`\nexit {:?}\nstdout:\n{}\nstderr:\n{}",
        example.line, example.text, ran.status, ran.stdout, ran.stderr
    );
    let shown = example.answer.join("\n");
    let program = example.program();
    // The failure README shows: a google.rpc.Status (curl) or grpcurl's
    // `Code: Name`.
    let expected_code = shown
        .split("\"code\":")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse::<i64>().ok());
    let expected_grpc = shown
        .split("Code: ")
        .nth(1)
        .map(|rest| rest.split_whitespace().next().unwrap_or("").to_string());

    if let Some(name) = expected_grpc {
        assert!(
            ran.status.is_some_and(|s| s != 0),
            "README shows this failing:\n{at}"
        );
        assert!(
            ran.stderr.contains(&format!("Code: {name}")),
            "README shows Code: {name}:\n{at}"
        );
        return;
    }
    if example.is_stream() {
        // A stream runs until Ctrl-C: ending earlier is an error.
        assert!(ran.status.is_none(), "the stream ended by itself:\n{at}");
    } else {
        assert_eq!(ran.status, Some(0), "{at}");
    }
    let is_curl = program == "curl" || example.text.starts_with("buf curl");
    if program == "grpcurl" || (is_curl && piped(&example.text)) {
        // grpcurl's exit status says how the call ended; a pipe's output
        // is what the next program made of it.
        return;
    }
    if !is_curl {
        return;
    }
    let values = json_values(&ran.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{at}"));
    if !example.is_stream() {
        assert!(!values.is_empty(), "no answer:\n{at}");
    }
    let codes: Vec<i64> = values.iter().filter_map(error_code).collect();
    match expected_code {
        Some(code) => assert_eq!(codes, [code], "README shows code {code}:\n{at}"),
        None => assert!(codes.is_empty(), "an error answer:\n{at}"),
    }
}

#[test]
fn readme_examples_run_in_order_on_a_fresh_demo() {
    if !have("grpcurl", "README's examples") {
        return;
    }
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let examples = examples(&readme);
    let runnable =
        |e: &Example| matches!(e.program(), "grpcurl" | "curl") || e.text.starts_with("buf curl");
    // A parser that lost the examples would pass on nothing.
    let calls = examples.iter().filter(|e| runnable(e)).count();
    let core = examples
        .iter()
        .filter(|e| matches!(e.program(), "grpcurl" | "curl"))
        .count();
    assert!(
        core >= 25,
        "only {core} grpcurl/curl examples found in README: {examples:#?}"
    );

    let with_buf = have("buf", "README's `buf curl` examples");
    let with_nats = have("nats", "README's nats examples");
    let demo = demo::start(&[], &[]);
    let work = tempfile::tempdir().expect("a working directory");
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let (mut ran, mut skipped, mut streamed_events) = (0, Vec::new(), 0);
    for example in &examples {
        // README names the demo's default addresses; this demo has free
        // ports (NORDLYS_LISTEN, NORDLYS_HTTP_LISTEN), nothing else differs.
        let text = example
            .text
            .replace(README_GRPC, &demo.listen)
            .replace(README_HTTP, &demo.http_listen);
        if let Some(name) = example.assignment() {
            let value = if example.trailing.contains("printed by scripts/demo") {
                // What the user copies from the demo's output.
                demo.exports.get(name).cloned().unwrap_or_else(|| {
                    panic!(
                        "README.md:{}: scripts/demo prints no `export {name}=` ({:?})",
                        example.line, demo.exports
                    )
                })
            } else {
                let out = run(
                    &format!("{text}\nprintf %s \"${name}\""),
                    &vars,
                    false,
                    work.path(),
                );
                assert_eq!(
                    out.status,
                    Some(0),
                    "README.md:{}: {}",
                    example.line,
                    out.stderr
                );
                out.stdout
            };
            vars.insert(name.to_string(), value);
            continue;
        }
        let wanted = match example.program() {
            "grpcurl" | "curl" => true,
            "buf" => with_buf && example.text.starts_with("buf curl"),
            "nats" => with_nats,
            _ => false,
        };
        if !wanted {
            skipped.push(format!("README.md:{} {}", example.line, example.program()));
            continue;
        }
        let started = Instant::now();
        let out = run(&text, &vars, example.is_stream(), work.path());
        println!(
            "README.md:{} {} ({} ms)",
            example.line,
            example.text.lines().next().unwrap_or(""),
            started.elapsed().as_millis()
        );
        check(example, &out);
        if example.is_stream() && out.stdout.contains("io.nordlys.v1.") {
            streamed_events += 1;
        }
        ran += 1;
    }
    println!("ran {ran} README examples ({calls} grpcurl/curl/buf curl); not run: {skipped:?}");
    assert!(
        ran >= core,
        "ran {ran}, README has {core} grpcurl/curl examples"
    );
    // The streams from the oldest event must have shown what came before.
    assert!(streamed_events >= 2, "the event streams showed no event");
}

// ---------------------------------------------------------------------------
// The NATS side

/// `nats --json` with the demo's NATS_URL.
fn nats_json(demo: &Demo, args: &[&str]) -> Value {
    let url = demo
        .exports
        .get("NATS_URL")
        .expect("the demo prints export NATS_URL=");
    let out = Command::new("nats")
        .args(args)
        .arg("--json")
        .env("NATS_URL", url)
        .output()
        .expect("nats");
    assert!(
        out.status.success(),
        "nats {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "nats {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn endpoint_names(info: &Value) -> Vec<String> {
    info["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .map(|e| e["name"].as_str().expect("endpoint name").to_string())
        .collect()
}

/// Requests per endpoint and instance id, from `nats micro stats`.
fn requests(stats: &Value) -> HashMap<(String, String), u64> {
    let mut out = HashMap::new();
    for instance in stats.as_array().expect("one stats answer per instance") {
        let id = instance["id"].as_str().expect("id").to_string();
        for endpoint in instance["endpoints"].as_array().expect("endpoints") {
            let name = endpoint["name"].as_str().expect("name").to_string();
            let n = endpoint["num_requests"].as_u64().expect("num_requests");
            out.insert((id.clone(), name), n);
        }
    }
    out
}

fn sum(counts: &HashMap<(String, String), u64>, ids: &[&str], endpoint: &str) -> u64 {
    counts
        .iter()
        .filter(|((id, name), _)| ids.contains(&id.as_str()) && name == endpoint)
        .map(|(_, n)| n)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_cli_shows_the_demo_micro_services_and_their_requests() {
    if !have("nats", "the nats micro checks") {
        return;
    }
    // The NATS route (the gateway's `route`, here from its environment), so
    // regiond's micro endpoints take the calls; on the default route they
    // take what direct gRPC cannot.
    let demo = demo::start(&[], &[("NORDLYS_ROUTE", "nats")]);

    // `nats micro ls`: every instance with its endpoints.
    let listed = nats_json(&demo, &["micro", "ls"]);
    let listed = listed.as_array().expect("an info per instance");
    let instances =
        |name: &str| -> Vec<&Value> { listed.iter().filter(|i| i["name"] == name).collect() };
    let regiond = instances("nordlys-regiond");
    let quota = instances("nordlys-quota");
    let region_of = |i: &Value| i["metadata"]["region"].as_str().unwrap_or("").to_string();
    let mut regions: Vec<String> = regiond.iter().map(|i| region_of(i)).collect();
    regions.sort();
    assert_eq!(regions, ["osl1", "sto1", "sto1"], "{listed:#?}");
    assert_eq!(quota.len(), 1, "{listed:#?}");
    for instance in &regiond {
        let region = region_of(instance);
        let names = endpoint_names(instance);
        for wanted in ["CreateProject", "GetProject", "CountResources"] {
            assert!(names.iter().any(|n| n == wanted), "{region}: {names:?}");
        }
        for endpoint in instance["endpoints"].as_array().expect("endpoints") {
            let subject = endpoint["subject"].as_str().expect("subject");
            assert!(
                subject.starts_with(&format!("nordlys.v1.{region}.RegiondService.")),
                "{subject}"
            );
            // One queue group: a region's instances share its requests.
            assert_eq!(endpoint["queue_group"], "q", "{endpoint}");
        }
    }
    let quota_endpoints = endpoint_names(quota[0]);
    for wanted in ["Authenticate", "Reserve", "Commit", "Release"] {
        assert!(
            quota_endpoints.iter().any(|n| n == wanted),
            "{quota_endpoints:?}"
        );
    }

    // `nats micro info`: one instance's info and stats.
    for (service, endpoint) in [
        ("nordlys-regiond", "CreateProject"),
        ("nordlys-quota", "Reserve"),
    ] {
        let info = nats_json(&demo, &["micro", "info", service]);
        assert_eq!(info["info"]["name"], service, "{info:#?}");
        assert!(
            endpoint_names(&info["info"]).iter().any(|n| n == endpoint),
            "{info:#?}"
        );
        assert_eq!(info["stats"]["name"], service, "{info:#?}");
    }

    // `nats micro stats`: counts grow with calls through the gateway.
    let ids = |region: &str| -> Vec<String> {
        regiond
            .iter()
            .filter(|i| region_of(i) == region)
            .map(|i| i["id"].as_str().expect("id").to_string())
            .collect()
    };
    let (sto1, osl1) = (ids("sto1"), ids("osl1"));
    let sto1: Vec<&str> = sto1.iter().map(String::as_str).collect();
    let osl1: Vec<&str> = osl1.iter().map(String::as_str).collect();
    let quota_id = quota[0]["id"].as_str().expect("id").to_string();
    let regiond_before = requests(&nats_json(&demo, &["micro", "stats", "nordlys-regiond"]));
    let quota_before = requests(&nats_json(&demo, &["micro", "stats", "nordlys-quota"]));

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", demo.listen))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect to the demo's gateway");
    let key = demo
        .exports
        .get("KEY")
        .expect("the demo prints export KEY=");
    let mut projects = ProjectServiceClient::new(channel);
    projects
        .create_project(bearer(
            CreateProjectRequest {
                project_id: "stats".into(),
                request_id: "stats-1".into(),
                project: Some(Project {
                    display_name: "Stats".into(),
                    regions: vec!["sto1".into(), "osl1".into()],
                    ..Default::default()
                }),
            },
            key,
        ))
        .await
        .expect("CreateProject");
    const GETS: u64 = 20;
    for _ in 0..GETS {
        projects
            .get_project(bearer(
                GetProjectRequest {
                    name: "projects/stats".into(),
                },
                key,
            ))
            .await
            .expect("GetProject");
    }

    let regiond_after = requests(&nats_json(&demo, &["micro", "stats", "nordlys-regiond"]));
    let quota_after = requests(&nats_json(&demo, &["micro", "stats", "nordlys-quota"]));
    let grew =
        |before: &HashMap<(String, String), u64>,
         after: &HashMap<(String, String), u64>,
         ids: &[&str],
         endpoint: &str| sum(after, ids, endpoint) - sum(before, ids, endpoint);
    assert!(
        grew(&regiond_before, &regiond_after, &sto1, "CreateProject") >= 1,
        "{regiond_after:?}"
    );
    assert!(
        grew(&regiond_before, &regiond_after, &osl1, "CreateProject") >= 1,
        "{regiond_after:?}"
    );
    // A GetProject reads each region of the project; sto1's two instances
    // share what comes to sto1 through the queue group (both idle in 20
    // random picks is one chance in a million).
    for id in &sto1 {
        assert!(
            grew(&regiond_before, &regiond_after, &[id], "GetProject") >= 1,
            "sto1 instance {id} took no GetProject: {regiond_after:?}"
        );
    }
    let gets = grew(&regiond_before, &regiond_after, &sto1, "GetProject")
        + grew(&regiond_before, &regiond_after, &osl1, "GetProject");
    assert!(
        gets >= GETS,
        "{gets} GetProject requests counted for {GETS} calls: {regiond_after:?}"
    );
    let q = [quota_id.as_str()];
    assert!(
        grew(&quota_before, &quota_after, &q, "Reserve") >= 1,
        "{quota_after:?}"
    );
    assert!(
        grew(&quota_before, &quota_after, &q, "Commit") >= 1,
        "{quota_after:?}"
    );
    println!(
        "regiond: sto1 {sto1:?}, osl1 {osl1:?}; GetProject counted {gets} times for {GETS} calls"
    );
}
