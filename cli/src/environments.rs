//! `nordlysctl plan`, `apply` and `delete-env`: environments
//! (`nordlys.v1.EnvironmentService`) from a YAML or JSON file.
//!
//! The file holds a `nordlys.v1.Environment` in its proto3 JSON shape
//! (camelCase field names, enums by name); YAML is read into JSON first, then
//! into the message through the descriptor pool `nordlys_proto` embeds, so an
//! error names the field that is wrong.

use std::{
    fmt::Write as _,
    io::{IsTerminal, Read},
    time::Duration,
};

use clap::Args;
use nordlys_proto::pb::nordlys::v1::{
    environment_service_client::EnvironmentServiceClient, plan_step::Action,
    region_status::State as RegionState, ApplyEnvironmentRequest, ApplyEnvironmentResponse,
    DeleteEnvironmentRequest, DeleteEnvironmentResponse, Environment, EnvironmentState, PlanStep,
    StepResult,
};
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage};
use serde_json::Value as Json;
use tonic::{transport::Channel, Code};

use super::{connect, request, Failure};

/// How long an apply or a delete may take (the channel's own timeout may
/// cut it shorter).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Args)]
pub(crate) struct Plan {
    /// The environment: a YAML or JSON file (`-` for stdin).
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    file: String,
    /// Also list the resources that stay as they are.
    #[arg(short, long)]
    verbose: bool,
}

#[derive(Debug, Args)]
pub(crate) struct Apply {
    /// The environment: a YAML or JSON file (`-` for stdin).
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    file: String,
    /// Also list the resources that stay as they are.
    #[arg(short, long)]
    verbose: bool,
    /// Idempotency key: the same request applies once (default: a random
    /// one). Reuse it to retry an apply whose answer was lost.
    #[arg(long)]
    request_id: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct DeleteEnv {
    /// `organizations/{org}/environments/{environment}`.
    name: String,
}

/// Plans the file's environment; `Ok(true)` when the plan changes something.
pub(crate) async fn plan(endpoint: &str, key: &str, args: &Plan) -> Result<bool, Failure> {
    let environment = load(&args.file)?;
    let name = environment.name.clone();
    let channel = connect(endpoint).await?;
    let answer = call_apply(channel, key, environment, true, String::new()).await?;
    let style = Style::detect();
    print!("{}", plan_text(&name, &answer, args.verbose, style));
    Ok(answer.changes)
}

/// Applies the file's environment; `Ok(true)` when it changed something.
pub(crate) async fn apply(endpoint: &str, key: &str, args: &Apply) -> Result<bool, Failure> {
    let environment = load(&args.file)?;
    let channel = connect(endpoint).await?;
    let request_id = args
        .request_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let name = environment.name.clone();
    let answer = call_apply(channel, key, environment, false, request_id).await?;
    let style = Style::detect();
    let report = apply_text(&name, &answer, args.verbose, style);
    print!("{}", report.text);
    if report.failed + report.not_run > 0 || incomplete(&answer) {
        return Err(Failure::Failed(format!(
            "apply of {name} is incomplete ({} failed, {} not run): run apply again to finish",
            report.failed, report.not_run
        )));
    }
    Ok(answer.changes)
}

/// Deletes an environment and what it made.
pub(crate) async fn delete(channel: Channel, key: &str, args: &DeleteEnv) -> Result<(), Failure> {
    let mut req = request(
        DeleteEnvironmentRequest {
            name: args.name.clone(),
        },
        key,
    )?;
    req.set_timeout(CALL_TIMEOUT);
    let answer = EnvironmentServiceClient::new(channel)
        .delete_environment(req)
        .await
        .map_err(|s| Failure::Rpc("DeleteEnvironment", s))?
        .into_inner();
    let report = delete_text(&args.name, &answer, Style::detect());
    print!("{}", report.text);
    if report.failed + report.not_run > 0 {
        return Err(Failure::Failed(format!(
            "delete of {} is incomplete ({} failed, {} not run): run delete-env again to finish",
            args.name, report.failed, report.not_run
        )));
    }
    Ok(())
}

async fn call_apply(
    channel: Channel,
    key: &str,
    environment: Environment,
    validate_only: bool,
    request_id: String,
) -> Result<ApplyEnvironmentResponse, Failure> {
    let mut req = request(
        ApplyEnvironmentRequest {
            environment: Some(environment),
            validate_only,
            request_id,
        },
        key,
    )?;
    req.set_timeout(CALL_TIMEOUT);
    Ok(EnvironmentServiceClient::new(channel)
        .apply_environment(req)
        .await
        .map_err(|s| Failure::Rpc("ApplyEnvironment", s))?
        .into_inner())
}

fn incomplete(answer: &ApplyEnvironmentResponse) -> bool {
    answer
        .environment
        .as_ref()
        .is_some_and(|e| e.state == EnvironmentState::Incomplete as i32)
}

// ---------------------------------------------------------------------------
// The file

/// Reads `path` (`-`: stdin) as an environment.
fn load(path: &str) -> Result<Environment, Failure> {
    let (label, text) = if path == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Failure::Input(format!("<stdin>: cannot read: {e}")))?;
        ("<stdin>".to_owned(), text)
    } else {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Failure::Input(format!("{path}: cannot read: {e}")))?;
        (path.to_owned(), text)
    };
    parse(&label, &text)
}

/// Parses an environment from YAML or JSON text; errors start with `label`.
fn parse(label: &str, text: &str) -> Result<Environment, Failure> {
    let fail = |why: String| Failure::Input(format!("{label}: {why}"));
    let json_like = label.ends_with(".json") || text.trim_start().starts_with('{');
    let json: Json = if json_like {
        serde_json::from_str(text).map_err(|e| fail(format!("not valid JSON: {e}")))?
    } else {
        serde_norway::from_str(text).map_err(|e| fail(format!("not valid YAML: {e}")))?
    };
    match &json {
        Json::Object(_) => {}
        Json::Null => return Err(fail("empty document: expected an environment".to_owned())),
        other => {
            return Err(fail(format!(
                "expected a mapping (an environment) at the top, found {}",
                json_kind(other)
            )))
        }
    }

    let pool = DescriptorPool::decode(nordlys_proto::FILE_DESCRIPTOR_SET)
        .map_err(|e| Failure::Input(format!("the embedded descriptor set is unreadable: {e}")))?;
    let desc = pool
        .get_message_by_name("nordlys.v1.Environment")
        .ok_or_else(|| {
            Failure::Input("nordlys.v1.Environment is missing from the descriptor set".to_owned())
        })?;
    let mut track = serde_path_to_error::Track::new();
    let message = DynamicMessage::deserialize_with_options(
        desc,
        serde_path_to_error::Deserializer::new(json, &mut track),
        &DeserializeOptions::new().deny_unknown_fields(true),
    )
    .map_err(|e| {
        let mut why = e.to_string();
        if why.contains("out of range integral type conversion") {
            why = "number out of range for this field".to_owned();
        }
        let path = track.path().to_string();
        if path == "." || path.is_empty() {
            fail(why)
        } else {
            fail(format!("{path}: {why}"))
        }
    })?;
    let environment: Environment = message
        .transcode_to()
        .map_err(|e| fail(format!("does not make a nordlys.v1.Environment: {e}")))?;
    if environment.name.is_empty() {
        return Err(fail(
            "name: missing (organizations/{org}/environments/{environment})".to_owned(),
        ));
    }
    Ok(environment)
}

fn json_kind(value: &Json) -> &'static str {
    match value {
        Json::Null => "nothing",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "a mapping",
    }
}

// ---------------------------------------------------------------------------
// Output

/// Whether to colour: stdout is a terminal and NO_COLOR is unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Style {
    color: bool,
}

impl Style {
    fn detect() -> Style {
        Style {
            color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.color && !code.is_empty() {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
}

const GREEN: &str = "32";
const YELLOW: &str = "33";
const RED: &str = "31";

fn action(step: &PlanStep) -> Action {
    Action::try_from(step.action).unwrap_or(Action::Unspecified)
}

fn is_change(step: &PlanStep) -> bool {
    matches!(
        action(step),
        Action::Create | Action::Update | Action::Delete
    )
}

/// The sign, the verb and the colour of a step's action.
fn verb(step: &PlanStep) -> (&'static str, &'static str, &'static str) {
    match action(step) {
        Action::Create => ("+", "create", GREEN),
        Action::Update => ("~", "update", YELLOW),
        Action::Delete => ("-", "delete", RED),
        Action::Unchanged => (" ", "unchanged", ""),
        Action::Unspecified => ("?", "unknown", ""),
    }
}

/// What a step line ends with: the fields an update changes and why, when
/// that says more than the action does.
fn annotation(step: &PlanStep) -> String {
    let mut parts = Vec::new();
    let replaced = step.reason.starts_with("replaced:");
    if !step.fields.is_empty() && !replaced && action(step) != Action::Create {
        parts.push(step.fields.join(", "));
    }
    if !step.reason.is_empty() && step.reason != "not there" {
        parts.push(step.reason.clone());
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("  ({})", parts.join("; "))
    }
}

/// How step lines are laid out: column widths, and whether they end with
/// the fields and reason.
#[derive(Debug, Clone, Copy)]
struct Columns {
    verb: usize,
    kind: usize,
    notes: bool,
}

impl Columns {
    /// Columns wide enough for the steps that are shown.
    fn of(steps: &[PlanStep], verbose: bool) -> Columns {
        let shown = || steps.iter().filter(|s| verbose || is_change(s));
        Columns {
            verb: shown().map(|s| verb(s).1.len()).max().unwrap_or(0),
            kind: shown().map(|s| s.kind.len()).max().unwrap_or(0),
            notes: true,
        }
    }
}

/// One plan line: `+ create  network  projects/shop/networks/backend`.
fn step_line(step: &PlanStep, columns: Columns, style: Style) -> String {
    let (sign, verb, color) = verb(step);
    let line = format!(
        "{sign} {verb:<vw$}  {kind:<kw$}  {resource}{note}",
        vw = columns.verb,
        kw = columns.kind,
        kind = step.kind,
        resource = step.resource,
        note = if columns.notes {
            annotation(step)
        } else {
            String::new()
        },
    );
    style.paint(color, line.trim_end())
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    create: usize,
    update: usize,
    delete: usize,
    unchanged: usize,
}

fn counts<'a>(steps: impl IntoIterator<Item = &'a PlanStep>) -> Counts {
    let mut c = Counts::default();
    for step in steps {
        match action(step) {
            Action::Create => c.create += 1,
            Action::Update => c.update += 1,
            Action::Delete => c.delete += 1,
            Action::Unchanged | Action::Unspecified => c.unchanged += 1,
        }
    }
    c
}

/// The plan's lines (unchanged ones only when `verbose`).
fn plan_lines(out: &mut String, plan: &[PlanStep], verbose: bool, style: Style) {
    let columns = Columns::of(plan, verbose);
    for step in plan.iter().filter(|s| verbose || is_change(s)) {
        out.push_str(&step_line(step, columns, style));
        out.push('\n');
    }
}

/// `plan`: the steps and a summary.
fn plan_text(name: &str, answer: &ApplyEnvironmentResponse, verbose: bool, style: Style) -> String {
    let mut out = String::new();
    let c = counts(&answer.plan);
    if !answer.changes {
        plan_lines(&mut out, &answer.plan, verbose, style);
        let _ = writeln!(
            out,
            "No changes: {name} is up to date ({} unchanged).",
            c.unchanged
        );
        return out;
    }
    let _ = writeln!(out, "Plan for {name}:");
    plan_lines(&mut out, &answer.plan, verbose, style);
    let _ = writeln!(
        out,
        "Plan: {} to create, {} to update, {} to delete, {} unchanged.",
        c.create, c.update, c.delete, c.unchanged
    );
    out
}

#[derive(Debug, Default)]
struct Report {
    text: String,
    failed: usize,
    not_run: usize,
}

/// A code's name and number, as `ResourceExhausted (8)`.
fn code_text(code: i32) -> String {
    format!("{:?} ({code})", Code::from_i32(code))
}

/// The outcome lines of the steps that ran (and of changes that did not).
fn outcome_lines(
    out: &mut String,
    plan: &[PlanStep],
    results: &[StepResult],
    verbose: bool,
    notes: bool,
    style: Style,
) -> (usize, usize) {
    let columns = Columns {
        notes,
        ..Columns::of(plan, verbose)
    };
    let mut failed = 0;
    let mut ran = vec![false; plan.len()];
    for result in results {
        let index = usize::try_from(result.step)
            .ok()
            .filter(|i| *i < plan.len());
        let line = match index {
            Some(i) => {
                ran[i] = true;
                let step = &plan[i];
                if !verbose && !is_change(step) && result.code == 0 {
                    continue;
                }
                step_line(step, columns, Style { color: false })
            }
            None => format!("? step {} (not in the plan)", result.step),
        };
        if result.code == 0 {
            let _ = writeln!(out, "  {}  {line}", style.paint(GREEN, "done   "));
            continue;
        }
        failed += 1;
        let why = if result.message.is_empty() {
            String::new()
        } else {
            format!(": {}", result.message)
        };
        let _ = writeln!(
            out,
            "  {}  {line}: {}{why}",
            style.paint(RED, "FAILED "),
            code_text(result.code)
        );
        for region in &result.region_status {
            let state = RegionState::try_from(region.state)
                .map(|s| s.as_str_name())
                .unwrap_or("UNKNOWN");
            if region.state == RegionState::Ready as i32 {
                continue;
            }
            let _ = write!(out, "             {}: {state}", region.region);
            if region.code != 0 {
                let _ = write!(out, " {}", code_text(region.code));
            }
            if !region.message.is_empty() {
                let _ = write!(out, ": {}", region.message);
            }
            out.push('\n');
        }
    }
    let mut not_run = 0;
    for (step, _) in plan
        .iter()
        .zip(&ran)
        .filter(|(s, ran)| !**ran && is_change(s))
    {
        not_run += 1;
        let _ = writeln!(
            out,
            "  {}  {}",
            style.paint(YELLOW, "not run"),
            step_line(step, columns, Style { color: false })
        );
    }
    (failed, not_run)
}

/// `apply`: the plan, each step's outcome and a summary.
fn apply_text(
    name: &str,
    answer: &ApplyEnvironmentResponse,
    verbose: bool,
    style: Style,
) -> Report {
    if !answer.changes && answer.results.iter().all(|r| r.code == 0) {
        return Report {
            text: plan_text(name, answer, verbose, style),
            ..Default::default()
        };
    }
    let mut out = String::new();
    let _ = writeln!(out, "Plan for {name}:");
    plan_lines(&mut out, &answer.plan, verbose, style);
    out.push_str("Results:\n");
    let (failed, not_run) = outcome_lines(
        &mut out,
        &answer.plan,
        &answer.results,
        verbose,
        false,
        style,
    );
    let done: Vec<&PlanStep> = answer
        .results
        .iter()
        .filter(|r| r.code == 0)
        .filter_map(|r| usize::try_from(r.step).ok())
        .filter_map(|i| answer.plan.get(i))
        .collect();
    let c = counts(done);
    if failed + not_run == 0 && !incomplete(answer) {
        let _ = writeln!(
            out,
            "Applied {name}: {} created, {} updated, {} deleted.",
            c.create, c.update, c.delete
        );
    } else {
        let _ = writeln!(
            out,
            "Apply incomplete: {} created, {} updated, {} deleted, {failed} failed, {not_run} not run.",
            c.create, c.update, c.delete
        );
    }
    Report {
        text: out,
        failed,
        not_run,
    }
}

/// `delete-env`: each delete's outcome and a summary.
fn delete_text(name: &str, answer: &DeleteEnvironmentResponse, style: Style) -> Report {
    let mut out = String::new();
    let _ = writeln!(out, "Deleting {name}:");
    let (failed, not_run) =
        outcome_lines(&mut out, &answer.plan, &answer.results, true, false, style);
    if failed + not_run == 0 {
        let done = answer.results.len();
        let _ = writeln!(
            out,
            "Deleted {name}: {done} resource{} removed.",
            if done == 1 { "" } else { "s" }
        );
    } else {
        let _ = writeln!(
            out,
            "Delete incomplete: {failed} failed, {not_run} not run."
        );
    }
    Report {
        text: out,
        failed,
        not_run,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
name: organizations/acme/environments/shop
parameters: {office: 10.0.0.0/8}
spec:
  parameters: [{name: office, defaultValue: 192.0.2.0/24}]
  project: {projectId: shop, displayName: Shop, regions: [sto1, osl1]}
  networks: [{networkId: backend, region: sto1, cidr: 10.20.0.0/24}]
  accessRules: [{accessRuleId: ssh, region: sto1, direction: INGRESS, protocol: TCP, portRangeMin: 22, portRangeMax: 22, remoteCidr: "${office}"}]
  members: [{userId: ada, role: PROJECT_ROLE_MEMBER, createUser: true, email: ada@acme.example}]
"#;

    fn error(label: &str, text: &str) -> String {
        match parse(label, text) {
            Ok(env) => panic!("parsed: {env:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parses_the_example() -> Result<(), String> {
        let env = parse("env.yaml", EXAMPLE).map_err(|e| e.to_string())?;
        assert_eq!(env.name, "organizations/acme/environments/shop");
        assert_eq!(
            env.parameters.get("office").map(String::as_str),
            Some("10.0.0.0/8")
        );
        let spec = env.spec.ok_or("no spec")?;
        assert_eq!(spec.project.ok_or("no project")?.regions, ["sto1", "osl1"]);
        let rule = &spec.access_rules[0];
        assert_eq!((rule.port_range_min, rule.port_range_max), (22, 22));
        assert_eq!(rule.remote_cidr, "${office}");
        assert!(spec.members[0].create_user);
        Ok(())
    }

    #[test]
    fn parses_json() -> Result<(), String> {
        let env = parse(
            "env.json",
            r#"{"name": "organizations/a/environments/b", "spec": {"networks": [{"networkId": "n", "dnsServers": ["192.0.2.53"]}]}}"#,
        )
        .map_err(|e| e.to_string())?;
        assert_eq!(
            env.spec.ok_or("no spec")?.networks[0].dns_servers,
            ["192.0.2.53"]
        );
        Ok(())
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let e = error(
            "env.yaml",
            "name: organizations/a/environments/b\nspec:\n  accessRules: [{direction: SIDEWAYS}]\n",
        );
        assert!(
            e.starts_with("env.yaml: spec.accessRules[0].direction"),
            "{e}"
        );
        let e = error(
            "env.yaml",
            "name: organizations/a/environments/b\nspec: {netwrks: []}\n",
        );
        assert!(e.contains("spec") && e.contains("netwrks"), "{e}");
        let e = error("env.yaml", "name: x\nspec: {networks: [{cidr: 10}]}\n");
        assert!(e.contains("spec.networks[0].cidr"), "{e}");
        let e = error(
            "env.yaml",
            "name: x\nspec: {accessRules: [{portRangeMin: -1}]}\n",
        );
        assert!(
            e.ends_with("spec.accessRules[0].portRangeMin: number out of range for this field"),
            "{e}"
        );
        let e = error("env.yaml", "name: [\n");
        assert!(e.starts_with("env.yaml: not valid YAML"), "{e}");
        let e = error("env.json", "{\"name\": ");
        assert!(e.starts_with("env.json: not valid JSON"), "{e}");
        assert!(error("e.yaml", "").contains("empty document"));
        assert!(error("e.yaml", "- a\n").contains("found a list"));
        assert!(error("e.yaml", "spec: {}\n").contains("name: missing"));
    }

    fn step(action: Action, kind: &str, resource: &str, fields: &[&str], reason: &str) -> PlanStep {
        PlanStep {
            action: action as i32,
            resource: resource.into(),
            kind: kind.into(),
            fields: fields.iter().map(|f| f.to_string()).collect(),
            reason: reason.into(),
        }
    }

    #[test]
    fn plan_lines_read_well() {
        let plan = vec![
            step(Action::Unchanged, "project", "projects/shop", &[], ""),
            step(
                Action::Create,
                "network",
                "projects/shop/networks/backend",
                &[],
                "not there",
            ),
            step(
                Action::Update,
                "network",
                "projects/shop/networks/front",
                &["dns_servers"],
                "",
            ),
            step(
                Action::Delete,
                "accessRule",
                "projects/shop/accessRules/ssh",
                &[],
                "no longer in the spec",
            ),
        ];
        let answer = ApplyEnvironmentResponse {
            environment: Some(Environment {
                name: "organizations/acme/environments/shop".into(),
                ..Default::default()
            }),
            plan,
            results: vec![],
            changes: true,
        };
        let plain = Style { color: false };
        let name = "organizations/acme/environments/shop";
        let text = plan_text(name, &answer, false, plain);
        assert_eq!(
            text,
            "Plan for organizations/acme/environments/shop:\n\
             + create  network     projects/shop/networks/backend\n\
             ~ update  network     projects/shop/networks/front  (dns_servers)\n\
             - delete  accessRule  projects/shop/accessRules/ssh  (no longer in the spec)\n\
             Plan: 1 to create, 1 to update, 1 to delete, 1 unchanged.\n"
        );
        let verbose = plan_text(name, &answer, true, plain);
        assert!(
            verbose.contains("  unchanged  project     projects/shop\n"),
            "{verbose}"
        );
        let colored = plan_text(name, &answer, false, Style { color: true });
        assert!(colored.contains("\x1b[32m+ create"), "{colored}");
        assert!(colored.contains("\x1b[31m- delete"), "{colored}");
    }

    #[test]
    fn apply_reports_failures_and_steps_not_run() {
        let answer = ApplyEnvironmentResponse {
            environment: None,
            plan: vec![
                step(Action::Create, "project", "projects/shop", &[], "not there"),
                step(
                    Action::Create,
                    "network",
                    "projects/shop/networks/a",
                    &[],
                    "not there",
                ),
                step(
                    Action::Create,
                    "network",
                    "projects/shop/networks/b",
                    &[],
                    "not there",
                ),
            ],
            results: vec![
                StepResult {
                    step: 0,
                    ..Default::default()
                },
                StepResult {
                    step: 1,
                    code: Code::ResourceExhausted as i32,
                    message: "no quota".into(),
                    region_status: vec![],
                },
            ],
            changes: true,
        };
        let report = apply_text("e", &answer, false, Style { color: false });
        assert_eq!((report.failed, report.not_run), (1, 1), "{}", report.text);
        assert!(
            report.text.contains("  done     + create  "),
            "{}",
            report.text
        );
        assert!(
            report
                .text
                .contains("projects/shop/networks/a: ResourceExhausted (8): no quota"),
            "{}",
            report.text
        );
        assert!(
            report.text.contains("  not run  + create  "),
            "{}",
            report.text
        );
        assert!(
            report.text.contains(
                "Apply incomplete: 1 created, 0 updated, 0 deleted, 1 failed, 1 not run."
            ),
            "{}",
            report.text
        );
    }
}
