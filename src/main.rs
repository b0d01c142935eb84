//! The `tollgate` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use tollgate::config::Config;
use tollgate::litellm_config::{self, Ignored};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "A fast LLM gateway with an OpenAI-compatible API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Validate the config file (config.toml, or a LiteLLM config.yaml) and
    /// exit (status 0 if it is valid).
    CheckConfig {
        #[arg(long, short, env = "TOLLGATE_CONFIG", default_value = "config.toml")]
        config: PathBuf,
    },
    /// Apply pending database migrations and exit (they also run at start-up).
    Migrate {
        #[arg(long, short, env = "TOLLGATE_CONFIG", default_value = "config.toml")]
        config: PathBuf,
    },
    /// Run a fake OpenAI-compatible provider, for tests, demos and benchmarks.
    MockUpstream(MockArgs),
    /// Translate a LiteLLM proxy config.yaml into tollgate's config.toml:
    /// the TOML goes to stdout, the LiteLLM settings left behind (by path)
    /// to stderr.
    ImportLitellm {
        /// The LiteLLM config (YAML).
        file: PathBuf,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Path to config.toml, or to a LiteLLM config.yaml (translated at start-up).
    #[arg(long, short, env = "TOLLGATE_CONFIG", default_value = "config.toml")]
    config: PathBuf,
    /// Override `server.host`.
    #[arg(long)]
    host: Option<String>,
    /// Override `server.port`.
    #[arg(long, short)]
    port: Option<u16>,
    /// Override `server.workers` (0 = one per core).
    #[arg(long)]
    workers: Option<usize>,
}

#[derive(Args)]
struct MockArgs {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, short, default_value_t = 8090)]
    port: u16,
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Delay before each response (and before the first stream chunk).
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Content chunks per streamed answer.
    #[arg(long)]
    chunks: Option<usize>,
    /// Delay between stream chunks.
    #[arg(long, default_value_t = 0)]
    chunk_interval_ms: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match load(&config) {
            Ok((c, litellm)) => {
                if let Some(imported) = litellm {
                    for i in &imported.ignored {
                        eprintln!("warning: ignored LiteLLM setting {i}");
                    }
                    for n in &imported.notes {
                        eprintln!("note: {n}");
                    }
                }
                println!(
                    "{}: ok ({} model groups, {} deployments)",
                    config.display(),
                    c.models.len(),
                    c.models
                        .values()
                        .map(|g| g.deployments.len())
                        .sum::<usize>()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Serve(args) => serve(args),
        Command::Migrate { config } => {
            let config = match load(&config) {
                Ok((c, _)) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let Some(url) = config.resolved_database_url else {
                eprintln!("error: no `database_url` in the config");
                return ExitCode::from(2);
            };
            match actix_rt::System::new().block_on(tollgate::store::Store::migrate(url.expose())) {
                Ok(n) => {
                    println!("{n} migration(s) applied");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::ImportLitellm { file } => import_litellm(&file),
        Command::MockUpstream(args) => {
            tollgate::telemetry::init("info");
            let opts = tollgate::mock::MockOptions {
                host: args.host,
                port: args.port,
                workers: args.workers.max(1),
                behaviour: tollgate::mock::Behaviour {
                    latency_ms: args.latency_ms,
                    chunks: args.chunks,
                    chunk_interval_ms: args.chunk_interval_ms,
                    ..Default::default()
                },
            };
            match actix_rt::System::new().block_on(tollgate::mock::run(opts)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: mock upstream: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The config at `path`: tollgate's TOML, or a LiteLLM config translated
/// (by extension `.yaml`/`.yml`, else by content: YAML with a
/// `model_list` that is not TOML). The translation comes back too, for its
/// report.
fn load(path: &Path) -> Result<(Config, Option<litellm_config::Imported>), String> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let litellm = match ext.as_deref() {
        Some("yaml" | "yml") => true,
        Some("toml") => false,
        _ => match std::fs::read_to_string(path) {
            Ok(text) => {
                text.parse::<toml::Table>().is_err() && litellm_config::looks_like_litellm(&text)
            }
            Err(_) => false,
        },
    };
    if !litellm {
        return Config::load(path)
            .map(|c| (c, None))
            .map_err(|e| e.to_string());
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    let imported =
        litellm_config::translate(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let config = imported.config().map_err(|e| {
        format!(
            "{} (translated from LiteLLM; `tollgate import-litellm {}` shows the TOML): {e}",
            path.display(),
            path.display()
        )
    })?;
    Ok((config, Some(imported)))
}

fn import_litellm(file: &Path) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let imported = match litellm_config::translate(&text) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    print!("{}", imported.annotated_toml());
    for i in &imported.ignored {
        eprintln!("warning: ignored LiteLLM setting {i}");
    }
    for n in &imported.notes {
        eprintln!("note: {n}");
    }
    // The file is written either way; say now if it will not start here.
    if let Err(e) = imported.config() {
        eprintln!(
            "warning: tollgate will refuse this config until this is fixed (or the variable is set where it runs): {e}"
        );
    }
    ExitCode::SUCCESS
}

/// One warning per LiteLLM setting left behind, once, at start-up.
fn log_import(ignored: &[Ignored], notes: &[String]) {
    for i in ignored {
        tracing::warn!("ignored LiteLLM setting {}: {}", i.path, i.reason);
    }
    for n in notes {
        tracing::warn!("LiteLLM config translated with a caveat: {n}");
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let (mut config, imported) = match load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(host) = args.host {
        config.server.host = host;
    }
    if let Some(port) = args.port {
        config.server.port = port;
    }
    if let Some(workers) = args.workers {
        config.server.workers = workers;
    }
    tollgate::telemetry::init(&config.logging.level);
    if let Some(imported) = &imported {
        log_import(&imported.ignored, &imported.notes);
    }
    actix_rt::System::new().block_on(async move {
        match tollgate::start(config).await {
            Ok(running) => {
                if let Some(mock) = running.mock() {
                    tracing::info!(url = %mock.url(), "built-in mock upstream running");
                }
                // actix-web handles SIGTERM/SIGINT: stop accepting, drain, then return.
                running.wait().await;
                tracing::info!("tollgate stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
