//! `load-gen`: parse options, run, print the report, exit with a code that means something
//! (0 ok, 1 error or failed verification, 2 bad usage, 130 interrupted).

use std::{io::Write as _, process::ExitCode, time::Duration};

use clap::Parser;
use load_gen::{
    cli::{Cli, Command, Output, ScenarioCommand},
    note,
    report::Report,
    run::execute,
    scenario::{self, Scenario},
    signals::on_interrupt,
};

/// At exit, how long work still running on the runtime (a span flush that gave up waiting, a
/// request being cancelled) may hold the process: dropping a runtime would wait for ever.
const RUNTIME_EXIT: Duration = Duration::from_millis(100);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            note!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(error) => {
            note!("error: {error:#}");
            ExitCode::FAILURE
        }
    };
    runtime.shutdown_timeout(RUNTIME_EXIT);
    code
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => {
            let instruments = args.common.instruments().await?;
            let plan = args.plan(&instruments).await?;
            let report = execute(plan, on_interrupt()).await;
            instruments.tracer.shutdown(report.interrupted).await;
            print_report(&report, args.common.output)?;
            if report.interrupted {
                return Ok(ExitCode::from(130));
            }
            Ok(match args.common.judge_errors(&report) {
                Ok(()) => ExitCode::SUCCESS,
                Err(warning) => {
                    note!("{warning}");
                    ExitCode::FAILURE
                }
            })
        }
        Command::Scenario(ScenarioCommand::List(dir)) => {
            let mut all_valid = true;
            for (name, parsed) in scenario::list(&dir.dir)? {
                match parsed {
                    Ok(s) => println!(
                        "{name:<16} {}  (expects: {})",
                        s.description,
                        expectations(&s)
                    ),
                    Err(e) => {
                        all_valid = false;
                        println!("{name:<16} INVALID: {e:#}");
                    }
                }
            }
            Ok(if all_valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Scenario(ScenarioCommand::Run(args)) => {
            load_gen::cli::run_scenario_command(args, print_report).await
        }
        Command::Reset(args) => {
            let plan = load_gen::reset::ResetPlan {
                services: std::iter::once(args.target)
                    .chain(args.downstream)
                    .collect(),
                prometheus: args.prometheus,
                wait: args.wait,
            };
            let quiet = load_gen::reset::reset(&plan, on_interrupt()).await?;
            Ok(if quiet {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Check { url } => {
            let (status, _) = load_gen::client::fetch(
                hyper::Method::GET,
                &url,
                None,
                std::time::Duration::from_secs(3),
            )
            .await?;
            if !status.is_success() {
                anyhow::bail!("{url} answered {status}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::History(args) => {
            load_gen::history::run(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify(args) => load_gen::verify_stack::run(*args).await,
        Command::AlertLog { listen } => {
            load_gen::alert_log::serve(listen).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn expectations(s: &Scenario) -> String {
    let mut parts = s.expected_alerts.clone();
    if s.none_firing_at_end {
        parts.push("no alert firing at the end".into());
    }
    if parts.is_empty() {
        "nothing".into()
    } else {
        parts.join(", ")
    }
}

/// Writes the report on stdout; a reader that went away is an error, never a panic.
fn print_report(report: &Report, output: Output) -> anyhow::Result<()> {
    let text = match output {
        Output::Json => format!("{}\n", serde_json::to_string_pretty(report)?),
        Output::Table => report.render_table(),
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| anyhow::anyhow!(e).context("while writing the report to stdout"))
}
