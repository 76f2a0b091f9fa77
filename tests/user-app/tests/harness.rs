//! A `#[test]` is a plough program too: `plough::testing` runs a root inside it, and its
//! children run this very test (tokio "full" is compiled in here, as in the program).

use plough::SpawnMethod;
use plough_user_app::registry;

fn fan_out(method: SpawnMethod, actors: u64) -> plough::Result<u64> {
    let rt = plough::testing::runtime(registry()).configure(|c| c.spawn_method = method);
    rt.run(move |root| async move {
        root.nursery(|n| async move {
            let mut sum = 0;
            for i in 0..actors {
                sum += n.start_actor(&format!("t-{i}")).await?.run::<_, u64>("square", i).await?;
            }
            Ok(sum)
        })
        .await
    })
}

#[test]
fn a_test_spawns_on_the_zygote() {
    assert_eq!(fan_out(SpawnMethod::Zygote, 4).unwrap(), 14);
}

#[test]
fn a_test_spawns_on_exec() {
    assert_eq!(fan_out(SpawnMethod::Exec, 3).unwrap(), 5);
}

#[test]
fn a_test_refuses_main_thread_forkserver_here_and_says_why() {
    let err = fan_out(SpawnMethod::MainThreadForkserver, 1).unwrap_err().to_string();
    assert!(err.contains("tokio") && err.contains("zygote"), "{err}");
}

#[tokio::test]
async fn a_tokio_test_spawns_with_the_default_backend() {
    let sum = plough::testing::run_async(registry(), |root| async move {
        root.nursery(|n| async move { n.start_actor("t").await?.run::<_, u64>("square", 7).await })
            .await
    })
    .await
    .unwrap();
    assert_eq!(sum, 49);
}
