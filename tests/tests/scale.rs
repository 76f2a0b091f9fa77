//! Scale: 1,000 actors started at once in one nursery, on every backend and over both
//! transports — every one boots (none times out), answers one call, and the tree is
//! cancelled with nothing left.

use plough::{SpawnMethod, testing};
use plough_tests::app::registry;
use std::time::{Duration, Instant};

const ACTORS: u32 = 1000;

fn fan_out(method: SpawnMethod, uds: bool) {
    let t = Instant::now();
    let rt = testing::runtime(registry()).configure(|c| {
        c.spawn_method = method;
        if uds {
            let dir = plough::ipc_wire::runtime_dir::default_dir();
            c.registry_addr =
                plough::Address::Uds(dir.join(format!("scale{}@reg.sock", std::process::id())));
        }
    });
    let answered = rt
        .run(|root| async move {
            tokio::time::timeout(Duration::from_secs(240), async move {
                root.nursery(|n| async move {
                    let calls = (0..ACTORS).map(|i| {
                        let n = n.clone();
                        async move {
                            let p = n.start_actor(&format!("s{i}")).await?;
                            p.run::<_, u32>("pid", ()).await
                        }
                    });
                    let pids = futures::future::try_join_all(calls).await?;
                    n.cancel().await;
                    Ok(pids.len() as u32)
                })
                .await
            })
            .await
            .unwrap_or_else(|_| panic!("{method}: 1,000 actors not done within 240 s"))
        })
        .unwrap_or_else(|e| panic!("{method} (uds: {uds}): {e}"));
    assert_eq!(answered, ACTORS);
    eprintln!("{method} uds={uds}: {ACTORS} actors up, answered and down in {:?}", t.elapsed());
}

#[test]
fn a_thousand_actors_at_once_on_the_zygote() {
    fan_out(SpawnMethod::Zygote, false);
    fan_out(SpawnMethod::Zygote, true);
}

#[test]
fn a_thousand_actors_at_once_with_exec() {
    fan_out(SpawnMethod::Exec, false);
    fan_out(SpawnMethod::Exec, true);
}

#[test]
fn a_thousand_actors_at_once_forked_in_process() {
    fan_out(SpawnMethod::MainThreadForkserver, false);
    fan_out(SpawnMethod::MainThreadForkserver, true);
}
