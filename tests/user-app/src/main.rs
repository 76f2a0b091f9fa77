//! A user's program: `#[tokio::main]` (multi-thread), clap, its own tracing subscriber,
//! threads of its own started before plough.
//!
//! * `fan-out --actors N`: N actors at once, one call each, prints `ok <sum of squares>`;
//! * `stress --spawns N --batch B`: N spawns, B at a time, while the program's threads
//!   hammer the allocator, stdio, tracing and `set_var`; prints `ok <spawns>`;
//! * `serve --actors N`: N idle actors; prints `ready <pids>`, runs until signalled.
//!
//! `--backend` picks the spawn method (default: plough's). Exits with the root's
//! `ActorError::exit_code` on an error (`error <message>` on stdout).

use clap::{Parser, Subcommand};
use plough::{ActorError, SpawnMethod};
use plough_user_app::{Hammers, registry};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "user-app", about = "A program that uses plough")]
struct Cli {
    /// The spawn method (`zygote`, `exec`, `main_thread_forkserver`).
    #[arg(long)]
    backend: Option<SpawnMethod>,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    FanOut {
        #[arg(long, default_value_t = 100)]
        actors: u64,
    },
    Stress {
        #[arg(long, default_value_t = 10_000)]
        spawns: u64,
        #[arg(long, default_value_t = 20)]
        batch: u64,
    },
    Serve {
        #[arg(long, default_value_t = 3)]
        actors: u64,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .init();
    // The program's own threads, started before plough, busy with the locks a fork could
    // catch held. Children run `main` from its start too; they skip this (the stress is
    // about the parent's threads at spawn time, and 4 spinning threads per child would
    // only starve a 2-core machine).
    let stress = matches!(cli.mode, Mode::Stress { .. });
    let hammers = (stress && !plough::started_as_child()).then(Hammers::start);
    let mut rt = plough::Runtime::new(registry())
        .configure(|c| c.registry_addr = "tcp://127.0.0.1:0".parse().expect("an address"));
    if let Some(b) = cli.backend {
        rt = rt.configure(|c| c.spawn_method = b);
    }
    let out = rt.run_async(|root| async move { run(root, cli.mode).await }).await;
    drop(hammers);
    match out {
        Ok(line) => {
            println!("ok {line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("error {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

async fn run(root: plough::Actor, mode: Mode) -> Result<String, ActorError> {
    match mode {
        Mode::FanOut { actors } => {
            root.nursery(|n| async move {
                let calls = (0..actors).map(|i| {
                    let n = n.clone();
                    async move {
                        let portal = n.start_actor(&format!("sq-{i}")).await?;
                        portal.run::<_, u64>("square", i).await
                    }
                });
                let squares = futures::future::try_join_all(calls).await?;
                Ok(squares.iter().sum::<u64>().to_string())
            })
            .await
        }
        Mode::Stress { spawns, batch } => {
            let mut done = 0;
            while done < spawns {
                let this = batch.min(spawns - done);
                root.nursery(|n| async move {
                    let calls = (0..this).map(|i| {
                        let n = n.clone();
                        async move {
                            let portal = n.start_actor(&format!("s-{}", done + i)).await?;
                            portal.run::<_, u32>("pid", ()).await
                        }
                    });
                    futures::future::try_join_all(calls).await?;
                    Ok(())
                })
                .await?;
                done += this;
            }
            Ok(done.to_string())
        }
        Mode::Serve { actors } => {
            root.nursery(|n| async move {
                let mut pids = Vec::new();
                let mut idle = Vec::new();
                for i in 0..actors {
                    let portal = n.start_actor(&format!("idle-{i}")).await?;
                    pids.push(portal.run::<_, u32>("pid", ()).await?.to_string());
                    idle.push(portal);
                }
                println!("ready {}", pids.join(" "));
                let calls = idle.iter().map(|p| p.run::<_, ()>("idle", ()));
                futures::future::try_join_all(calls).await?;
                Ok(String::from("served"))
            })
            .await
        }
    }
}
