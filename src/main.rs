//! The `tollgate` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use tollgate::config::Config;

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
    /// Validate the config file and exit (status 0 if it is valid).
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
}

#[derive(Args)]
struct ServeArgs {
    /// Path to config.toml.
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
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(c) => {
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
            let config = match Config::load(&config) {
                Ok(c) => c,
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

fn serve(args: ServeArgs) -> ExitCode {
    let mut config = match Config::load(&args.config) {
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
