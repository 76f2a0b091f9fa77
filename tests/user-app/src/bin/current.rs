//! The same program on a current-thread `#[tokio::main]`: `current [N]` starts N actors
//! (default 10), one call each, prints `ok <sum of squares>`.

use plough_user_app::registry;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let actors: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let out = plough::Runtime::new(registry())
        .configure(|c| c.registry_addr = "tcp://127.0.0.1:0".parse().expect("an address"))
        .run_async(|root| async move {
            root.nursery(|n| async move {
                let calls = (0..actors).map(|i| {
                    let n = n.clone();
                    async move {
                        n.start_actor(&format!("sq-{i}")).await?.run::<_, u64>("square", i).await
                    }
                });
                Ok(futures::future::try_join_all(calls).await?.iter().sum::<u64>())
            })
            .await
        })
        .await;
    match out {
        Ok(sum) => {
            println!("ok {sum}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            println!("error {e}");
            std::process::ExitCode::from(e.exit_code() as u8)
        }
    }
}
