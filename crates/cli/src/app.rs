//! The `cloudai` binary: global flags and contexts, `login`, `context`,
//! `whoami`, `repl` and `completion`; every other command is a line of the
//! shared grammar, run by the shared executor over gRPC.
//!
//! Exit codes: 0 ok, 1 error, 2 usage, and with `--follow` the task's own
//! exit code (1 when it ended without one, 130 when interrupted).

use crate::client::{BoxError, Client, Transport};
use crate::config::{self, Config, Context};
use crate::exec::{self, Format, Session};
use crate::parse::{self, COMMANDS, Command};
use anyhow::{Context as _, anyhow};
use clap::{CommandFactory, Parser, Subcommand};
use cloudai_proto::v1::WhoAmIResponse;
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// The operator CLI of a CloudAI cluster.
#[derive(Debug, Parser)]
#[command(
    name = "cloudai",
    version,
    about = "The CloudAI operator CLI: run and follow tasks, watch workers, manage users, tokens and secrets of a cluster from anywhere that reaches its master.",
    after_help = AFTER_HELP,
    disable_help_subcommand = true
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    /// The command and its arguments (`cloudai help` lists them).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    words: Vec<String>,
}

/// How to reach the master; each overrides what the context says.
#[derive(Debug, Clone, clap::Args)]
struct Global {
    /// The context (cluster) to use instead of the current one.
    #[arg(long, global = true, env = "CLOUDAI_CONTEXT")]
    context: Option<String>,
    /// The master's gRPC address (host:port).
    #[arg(long, global = true, env = "CLOUDAI_MASTER", value_name = "HOST:PORT")]
    master: Option<String>,
    /// The API token.
    #[arg(long, global = true, env = "CLOUDAI_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The cluster CA certificate (PEM file) to trust.
    #[arg(long, global = true, env = "CLOUDAI_CA", value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
    /// Output of read commands: text for people, json for scripts.
    #[arg(short, long, global = true, value_enum, default_value_t = Format::Text)]
    output: Format,
}

/// What only the binary does.
#[derive(Debug, Subcommand)]
enum Local {
    /// Log in to a master: trust its CA, check the token, save a context.
    #[command(
        after_help = "examples:\n  cloudai login 10.0.0.5:50051                 # shows the CA fingerprint, asks to trust it\n  cloudai login 10.0.0.5:50051 --ca ca.pem --token \"$TOKEN\" --name prod\n  cloudai login 127.0.0.1:50051 --insecure      # a master run with --insecure"
    )]
    Login {
        /// The master's gRPC address (host:port, usually port 50051).
        address: String,
        /// Name of the context to save (default: the master's host).
        #[arg(long)]
        name: Option<String>,
        /// Trust the presented CA without asking (check the fingerprint!).
        #[arg(long)]
        yes: bool,
        /// Trust the presented CA only if its SHA-256 fingerprint is this.
        #[arg(long, value_name = "SHA256")]
        ca_fingerprint: Option<String>,
        /// The master runs with --insecure: plaintext, no CA, no token.
        #[arg(long)]
        insecure: bool,
    },
    /// Contexts: list them, switch, or remove one.
    #[command(
        subcommand,
        after_help = "examples:\n  cloudai context list\n  cloudai context use prod\n  cloudai --context dev tasks"
    )]
    Context(ContextAction),
    /// Who the token belongs to, and when it expires.
    Whoami,
    /// The interactive REPL against the master (completion, history, live views).
    Repl,
    /// A shell completion script: `source <(cloudai completion bash)`.
    #[command(
        after_help = "examples:\n  source <(cloudai completion bash)\n  cloudai completion zsh > ~/.zfunc/_cloudai\n  cloudai completion fish > ~/.config/fish/completions/cloudai.fish"
    )]
    Completion {
        /// bash, zsh or fish.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum ContextAction {
    /// Every context; `*` marks the current one.
    List,
    /// Make a context the current one.
    Use { name: String },
    /// Forget a context (and its token).
    Remove { name: String },
}

const AFTER_HELP: &str = "commands (`cloudai <command> --help` for each):
  login, context, whoami, repl, completion      this machine's side
  status, workers, stats                        the cluster
  task (run), tasks, monitor, logs, cancel      tasks
  register, unregister, join-token, certs       workers (admin)
  users, user, token, secrets, secret           access (admin)

examples:
  cloudai login 10.0.0.5:50051
  cloudai task auto pytorch/pytorch:latest --gpus 1 --follow -- python train.py
  cloudai tasks --state running -o json
  cloudai logs -f t-3f2a9c1b0d4e

exit codes: 0 ok, 1 error, 2 usage, and with --follow the task's exit code.
environment: CLOUDAI_MASTER, CLOUDAI_TOKEN, CLOUDAI_CA, CLOUDAI_CONTEXT, CLOUDAI_CONFIG, NO_COLOR.";

/// Examples shown by `cloudai <command> --help`.
const EXAMPLES: &[(&str, &str)] = &[
    (
        "status",
        "cloudai status\n  cloudai status --watch\n  cloudai status -o json",
    ),
    (
        "workers",
        "cloudai workers\n  cloudai workers -o json | jq '.[].id'",
    ),
    ("stats", "cloudai stats\n  cloudai stats gpu-1 --watch"),
    (
        "task",
        "cloudai task auto busybox -- echo hello\n  cloudai run auto pytorch/pytorch:latest --gpus 1 --shm-size 8g --follow -- python train.py\n  cloudai task gpu-1 registry.local/team/app:v1 --secret WANDB_API_KEY=wandb --volume data:/data",
    ),
    (
        "tasks",
        "cloudai tasks\n  cloudai tasks --state failed --newest --limit 20\n  cloudai tasks --owner ana -o json",
    ),
    ("monitor", "cloudai monitor t-3f2a9c1b0d4e"),
    (
        "logs",
        "cloudai logs t-3f2a9c1b0d4e > out.txt\n  cloudai logs -f t-3f2a9c1b0d4e",
    ),
    ("cancel", "cloudai cancel t-3f2a9c1b0d4e"),
    ("register", "cloudai register gpu-1 10.0.0.7:50052"),
    ("unregister", "cloudai unregister gpu-1"),
    ("join-token", "cloudai join-token gpu-1"),
    ("certs", "cloudai certs"),
    ("users", "cloudai users\n  cloudai users -o json"),
    (
        "user",
        "cloudai user add ana operator\n  cloudai user remove ana",
    ),
    (
        "token",
        "cloudai token create ana --expires 30d\n  cloudai token revoke 0a1b2c3d",
    ),
    ("secrets", "cloudai secrets"),
    (
        "secret",
        "cloudai secret set wandb                       # asks for the value, not echoed\n  printf '%s' \"$KEY\" | cloudai secret set wandb\n  cloudai secret set hub --registry registry.local:5000   # USER:PASSWORD",
    ),
    ("help", "cloudai help\n  cloudai help task"),
];

/// Runs `cloudai` and returns its exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { 2 } else { 0 });
        }
    };
    cloudai_common::tls::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start: {error}");
            return ExitCode::from(1);
        }
    };
    match dispatch(cli, &runtime) {
        // A code outside 0–255 (Docker can report -1) is a failure, never 0.
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(Exit::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(Exit::Error(error)) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}

/// How `cloudai` fails.
enum Exit {
    /// The command line is wrong (exit code 2).
    Usage(String),
    /// Anything else (exit code 1).
    Error(anyhow::Error),
}

impl From<anyhow::Error> for Exit {
    fn from(error: anyhow::Error) -> Self {
        Exit::Error(error)
    }
}

impl From<config::ConfigError> for Exit {
    fn from(error: config::ConfigError) -> Self {
        Exit::Error(error.into())
    }
}

/// The config file's path and what it holds.
fn load_config() -> Result<(std::path::PathBuf, Config), Exit> {
    let path = config::path()?;
    let config = Config::load(&path)?;
    Ok((path, config))
}

/// Takes the global flags out of a command's words (up to a `--`, after
/// which the words are a container command's): `cloudai tasks -o json`.
fn take_globals(words: Vec<String>, global: &mut Global) -> Result<Vec<String>, Exit> {
    let end = command_start(&words);
    let (words, container) = {
        let mut words = words;
        let container = words.split_off(end);
        (words, container)
    };
    let mut kept = Vec::with_capacity(words.len() + container.len());
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        let (flag, inline) = match word.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_string(), Some(value.to_string()))
            }
            _ => (word.clone(), None),
        };
        if !matches!(
            flag.as_str(),
            "--context" | "--master" | "--token" | "--ca" | "--output" | "-o"
        ) {
            kept.push(word);
            continue;
        }
        let value = match inline {
            Some(value) => value,
            None => words
                .next()
                .ok_or_else(|| Exit::Usage(format!("{flag} needs a value")))?,
        };
        match flag.as_str() {
            "--context" => global.context = Some(value),
            "--master" => global.master = Some(value),
            "--token" => global.token = Some(value),
            "--ca" => global.ca = Some(value.into()),
            _ => {
                global.output = match value.as_str() {
                    "text" => Format::Text,
                    "json" => Format::Json,
                    other => {
                        return Err(Exit::Usage(format!(
                            "--output: '{other}' is not one of text, json"
                        )));
                    }
                }
            }
        }
    }
    kept.extend(container);
    Ok(kept)
}

/// Where a `task` line's container command starts (its words belong to the
/// container, flags and all): at `--`, or at the first word after the worker
/// and the image that is not one of `task`'s options; the end for any other
/// command.
fn command_start(words: &[String]) -> usize {
    if !matches!(words.first().map(String::as_str), Some("task" | "run")) {
        return words.len();
    }
    let grammar = parse::grammar_command();
    let Some(task) = grammar.find_subcommand("task") else {
        return words.len();
    };
    let takes_value = |word: &str| {
        task.get_arguments().any(|arg| {
            let named = arg.get_long().is_some_and(|l| word == format!("--{l}"))
                || arg.get_short().is_some_and(|c| word == format!("-{c}"));
            named && arg.get_action().takes_values()
        })
    };
    let mut positionals = 0;
    let mut index = 1;
    while index < words.len() {
        let word = words[index].as_str();
        if word == "--" {
            return index;
        }
        if word.starts_with('-') {
            // A global flag or one of task's; its value is the next word.
            let global = matches!(
                word,
                "--context" | "--master" | "--token" | "--ca" | "--output" | "-o"
            );
            if (global || takes_value(word)) && !word.contains('=') {
                index += 1;
            }
        } else {
            positionals += 1;
            if positionals > 2 {
                return index;
            }
        }
        index += 1;
    }
    words.len()
}

fn dispatch(mut cli: Cli, runtime: &tokio::runtime::Runtime) -> Result<i32, Exit> {
    // Channels are made inside the runtime.
    let _runtime = runtime.enter();
    cli.words = take_globals(std::mem::take(&mut cli.words), &mut cli.global)?;
    let Some(first) = cli.words.first().map(String::as_str) else {
        let _ = Cli::command().print_help();
        return Ok(0);
    };
    if is_help_request(&cli.words) {
        print_help(first)?;
        return Ok(0);
    }
    // `help <command>` needs no master.
    if let [help, topic] = cli.words.as_slice()
        && help == "help"
    {
        print_help(topic)?;
        return Ok(0);
    }
    if matches!(
        first,
        "login" | "context" | "whoami" | "repl" | "completion"
    ) {
        let mut words = vec!["cloudai".to_string()];
        words.extend(cli.words.iter().cloned());
        let local = LocalCli::try_parse_from(words).map_err(|e| Exit::Usage(one_line(&e)))?;
        return runtime.block_on(local_command(local.command, &cli.global, runtime));
    }
    if first == "exit" {
        return Err(Exit::Usage(
            "`exit` leaves the REPL; here every command ends by itself".into(),
        ));
    }
    let line = shlex::try_join(cli.words.iter().map(String::as_str))
        .map_err(|e| Exit::Usage(e.to_string()))?;
    let command = parse::parse(&line).map_err(|e| Exit::Usage(e.to_string()))?;
    let session = session(&cli.global)?;
    let command = match command {
        Command::SecretSet {
            name,
            registry,
            value: None,
        } => {
            let value = read_value(&crate::repl::secret_prompt(&name, registry.as_deref()))?;
            Command::SecretSet {
                name,
                registry,
                value,
            }
        }
        command => command,
    };
    runtime.block_on(run_one(&session, command))
}

/// `cloudai <command> --help` (before any container command).
fn is_help_request(words: &[String]) -> bool {
    words[1..command_start(words).max(1)]
        .iter()
        .any(|w| w == "--help" || w == "-h")
        || (words.len() == 1 && words[0] == "help")
}

#[derive(Debug, Parser)]
#[command(name = "cloudai", disable_help_subcommand = true)]
struct LocalCli {
    #[command(subcommand)]
    command: Local,
}

fn print_help(name: &str) -> Result<(), Exit> {
    if matches!(name, "login" | "context" | "whoami" | "repl" | "completion") {
        let mut command = LocalCli::command();
        if let Some(sub) = command.find_subcommand_mut(name) {
            let _ = sub.print_long_help();
        }
        return Ok(());
    }
    if name == "help" {
        let _ = Cli::command().print_help();
        return Ok(());
    }
    let canonical = if name == "run" { "task" } else { name };
    let Some((_, usage, about)) = COMMANDS.iter().find(|(n, _, _)| *n == canonical) else {
        return Err(Exit::Usage(format!(
            "unknown command '{name}': `cloudai --help` lists commands"
        )));
    };
    let examples = EXAMPLES
        .iter()
        .find(|(n, _)| *n == canonical)
        .map_or(String::new(), |(_, e)| format!("\nexamples:\n  {e}\n"));
    println!("usage: cloudai {usage}\n\n{about}\n{examples}");
    Ok(())
}

/// clap's error in one line, without its `error: ` prefix.
fn one_line(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let line = rendered.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

async fn run_one(session: &Session, command: Command) -> Result<i32, Exit> {
    let interrupt = CancellationToken::new();
    let stop = interrupt.clone();
    let ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            stop.cancel();
        }
    });
    let mut out = std::io::stdout();
    let result = exec::run(session, command, &mut out, &interrupt).await;
    ctrl_c.abort();
    let _ = out.flush();
    match result {
        Ok(done) => Ok(done.exit_code),
        Err(exec::Failure::Usage(message)) => Err(Exit::Usage(message)),
        Err(failure) => Err(Exit::Error(anyhow!(failure.message(&session.client)))),
    }
}

/// A secret's value: hidden from a terminal, else the first line of stdin.
fn read_value(prompt: &str) -> Result<Option<String>, Exit> {
    if std::io::stdin().is_terminal() {
        return crate::keys::read_hidden(prompt)
            .context("cannot read the value")
            .map_err(Exit::Error);
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the value from stdin")?;
    let value = line.trim_end_matches(['\n', '\r']).to_string();
    Ok((!value.is_empty()).then_some(value))
}

/// Where to connect: flags and environment over the context.
struct Target {
    master: String,
    ca_pem: Option<String>,
    token: Option<String>,
}

fn target(global: &Global) -> Result<Target, Exit> {
    let (_, config) = load_config()?;
    let context = config
        .context(global.context.as_deref())?
        .map(|(_, c)| c.clone())
        .unwrap_or_default();
    let master = global.master.clone().unwrap_or(context.master);
    if master.is_empty() {
        return Err(Exit::Error(anyhow!(
            "no master to talk to: `cloudai login HOST:50051` first (or set CLOUDAI_MASTER)"
        )));
    }
    let ca_pem = match &global.ca {
        Some(file) => Some(
            std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the CA file {}", file.display()))?,
        ),
        None => context.ca_pem,
    };
    Ok(Target {
        master,
        ca_pem,
        token: global.token.clone().or(context.token),
    })
}

/// A client over a TLS (or, without a CA, plaintext) channel.
fn connect(master: &str, ca_pem: Option<&str>, token: Option<String>) -> Result<Client, Exit> {
    use tonic::transport::{Certificate, ClientTlsConfig};
    let tls = match ca_pem {
        Some(pem) => Some(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(pem))
                .domain_name(cloudai_common::tls::host_of(master)),
        ),
        // A token never crosses the network in the clear.
        None if token.is_some() => {
            return Err(Exit::Error(anyhow!(
                "no CA to check the master at {master} with, and a token to send: `cloudai login {master}` (or --ca FILE); a master run with --insecure takes no token"
            )));
        }
        None => None,
    };
    let channel = cloudai_common::tls::lazy_channel("master", master, tls)
        .map_err(|e| Exit::Error(anyhow!(e.0)))?;
    let transport = Transport::new(channel.map_err(|e| Box::new(e) as BoxError));
    Ok(Client::new(transport, token, format!("master at {master}")))
}

fn session(global: &Global) -> Result<Session, Exit> {
    let target = target(global)?;
    Ok(Session {
        client: connect(&target.master, target.ca_pem.as_deref(), target.token)?,
        format: global.output,
        colour: crate::views::colour_enabled(),
    })
}

/// A session with the master, and who its token belongs to.
async fn signed_in(global: &Global) -> Result<(Session, WhoAmIResponse), Exit> {
    let session = session(global)?;
    let me = session
        .client
        .who_am_i()
        .await
        .map_err(|status| Exit::Error(anyhow!(session.client.explain(&status))))?;
    Ok((session, me))
}

async fn local_command(
    command: Local,
    global: &Global,
    runtime: &tokio::runtime::Runtime,
) -> Result<i32, Exit> {
    match command {
        Local::Login {
            address,
            name,
            yes,
            ca_fingerprint,
            insecure,
        } => login(global, address, name, yes, ca_fingerprint, insecure).await,
        Local::Context(action) => context(action),
        Local::Whoami => {
            let (session, me) = signed_in(global).await?;
            let expiry = match &me.token_expires_at {
                Some(at) => format!("; the token expires {}", crate::views::moment(Some(at))),
                None => String::new(),
            };
            if global.output == Format::Json {
                let value = serde_json::json!({
                    "user": me.user,
                    "role": me.role,
                    "master": session.client.target().trim_start_matches("master at "),
                    "token_expires_at": me.token_expires_at.as_ref().map(|t| crate::views::moment(Some(t))),
                });
                println!("{value:#}");
            } else {
                println!(
                    "{} ({}) on the {}{expiry}",
                    me.user,
                    me.role,
                    session.client.target()
                );
            }
            Ok(0)
        }
        Local::Repl => {
            let (session, me) = signed_in(global).await?;
            let repl = crate::repl::Repl {
                banner: format!(
                    "cloudai: {} ({}) on the {}: `help` lists commands, Ctrl-C stops a live view, `exit` or Ctrl-D leaves",
                    me.user,
                    me.role,
                    session.client.target()
                ),
                session,
                runtime: runtime.handle().clone(),
                history: config::path()
                    .ok()
                    .and_then(|p| p.parent().map(|d| d.join("repl_history"))),
                stop: CancellationToken::new(),
            };
            // rustyline blocks: off the runtime's threads.
            tokio::task::spawn_blocking(move || repl.run())
                .await
                .map_err(|e| Exit::Error(anyhow!("the REPL stopped: {e}")))?
                .context("the REPL failed")?;
            Ok(0)
        }
        Local::Completion { shell } => {
            let mut command = completion_command();
            clap_complete::generate(shell, &mut command, "cloudai", &mut std::io::stdout());
            Ok(0)
        }
    }
}

/// The whole grammar as one clap command, for completion scripts.
fn completion_command() -> clap::Command {
    let mut command = Cli::command().mut_arg("words", |a| a.hide(true));
    for sub in LocalCli::command().get_subcommands() {
        command = command.subcommand(sub.clone());
    }
    for sub in parse::grammar_command().get_subcommands() {
        if sub.get_name() != "exit" {
            command = command.subcommand(sub.clone());
        }
    }
    command
}

async fn login(
    global: &Global,
    address: String,
    name: Option<String>,
    yes: bool,
    ca_fingerprint: Option<String>,
    insecure: bool,
) -> Result<i32, Exit> {
    let ca_pem = if insecure {
        None
    } else if let Some(file) = &global.ca {
        Some(
            std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the CA file {}", file.display()))?,
        )
    } else {
        Some(trust_presented_ca(&address, yes, ca_fingerprint.as_deref()).await?)
    };
    let token = match global.token.clone() {
        Some(token) => Some(token),
        None if insecure => None,
        None => read_value("API token (not echoed): ")?,
    };
    if !insecure && token.is_none() {
        return Err(Exit::Usage(
            "an API token is needed: ask an admin for one (`token create <user>`) and pass it with --token or CLOUDAI_TOKEN".into(),
        ));
    }
    let client = connect(&address, ca_pem.as_deref(), token.clone())?;
    let me = client
        .who_am_i()
        .await
        .map_err(|status| Exit::Error(anyhow!("login failed: {}", client.explain(&status))))?;
    let (path, mut config) = load_config()?;
    let name = name.unwrap_or_else(|| {
        address
            .rsplit_once(':')
            .map_or(address.as_str(), |(host, _)| host)
            .to_string()
    });
    config.contexts.insert(
        name.clone(),
        Context {
            master: address.clone(),
            ca_pem,
            token,
            user: Some(me.user.clone()),
        },
    );
    config.current = Some(name.clone());
    config.save(&path)?;
    println!(
        "logged in to {address} as {} ({}); context '{name}' is current (saved in {})",
        me.user,
        me.role,
        path.display()
    );
    Ok(0)
}

/// The CA the master at `address` presents, once the operator trusts it.
async fn trust_presented_ca(
    address: &str,
    yes: bool,
    expected: Option<&str>,
) -> Result<String, Exit> {
    let chain = cloudai_common::tls::presented_chain(address)
        .await
        .map_err(|e| Exit::Error(anyhow!(e.0)))?;
    let Some(ca) = chain.last().filter(|_| chain.len() > 1) else {
        return Err(Exit::Error(anyhow!(
            "the master at {address} presents no CA certificate: pass the cluster's CA with --ca FILE"
        )));
    };
    let fingerprint = cloudai_common::tls::fingerprint(ca);
    let shown = fingerprint
        .as_bytes()
        .chunks(2)
        .map(|pair| String::from_utf8_lossy(pair).to_uppercase())
        .collect::<Vec<_>>()
        .join(":");
    if let Some(expected) = expected {
        let expected = expected.replace(':', "").to_lowercase();
        if expected != fingerprint {
            return Err(Exit::Error(anyhow!(
                "the master at {address} presents a CA with fingerprint {shown}, not the one given: nothing was saved"
            )));
        }
    } else if !yes {
        eprintln!(
            "the master at {address} presents the cluster CA with SHA-256 fingerprint\n  {shown}"
        );
        eprintln!(
            "compare it with `openssl x509 -noout -fingerprint -sha256 -in <data-dir>/tls/ca.crt` on the master"
        );
        if !std::io::stdin().is_terminal() {
            return Err(Exit::Error(anyhow!(
                "not trusted: confirm with --yes or --ca-fingerprint SHA256 (stdin is not a terminal to ask)"
            )));
        }
        eprint!("trust it? [y/N] ");
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .context("cannot read the answer")?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err(Exit::Error(anyhow!("not trusted: nothing was saved")));
        }
    }
    Ok(cloudai_common::tls::pem(ca))
}

fn context(action: ContextAction) -> Result<i32, Exit> {
    let (path, mut config) = load_config()?;
    match action {
        ContextAction::List => {
            if config.contexts.is_empty() {
                println!("no contexts: `cloudai login HOST:50051` adds one");
            }
            for (name, context) in &config.contexts {
                let mark = if config.current.as_deref() == Some(name) {
                    "*"
                } else {
                    " "
                };
                println!(
                    "{mark} {name:<20} {:<24} {}",
                    context.master,
                    context.user.as_deref().unwrap_or("-")
                );
            }
        }
        ContextAction::Use { name } => {
            if !config.contexts.contains_key(&name) {
                return Err(Exit::Error(anyhow!(
                    "no context '{name}': `cloudai context list` shows them"
                )));
            }
            config.current = Some(name.clone());
            config.save(&path)?;
            println!("context '{name}' is current");
        }
        ContextAction::Remove { name } => {
            if config.contexts.remove(&name).is_none() {
                return Err(Exit::Error(anyhow!(
                    "no context '{name}': `cloudai context list` shows them"
                )));
            }
            if config.current.as_deref() == Some(&name) {
                config.current = None;
            }
            config.save(&path)?;
            println!("context '{name}' removed");
        }
    }
    Ok(0)
}
