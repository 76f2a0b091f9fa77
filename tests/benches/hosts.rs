//! Multi-host rows of `cargo xtask bench` (issue 19), each next to its local equivalent
//! measured in the same run:
//!
//! * remote spawn → first RPC answered: a root in one network namespace starts an actor
//!   through `plough-host` in another (mutual TLS, the lab's veths and bridge) and calls
//!   `add` once; next to a local spawn → first RPC of the same program (`plough_app`, the
//!   same spawn method) by a root in the machine's own namespace;
//! * RPC round trip across namespaces (TLS), next to a local RPC round trip over TCP
//!   (loopback) and over UDS.
//!
//! The lab is the tests' own (`plough_tests::netns`: namespaces `plough-t-*`, removed
//! on drop, also on a panic, with the daemon it runs). Without root or `ip` the rows are
//! skipped with the reason printed, and the bench succeeds. `--quick` takes fewer
//! samples. Prints a table like the runtime bench's and writes
//! `target/plough-bench-hosts.json` (same shape).

use plough::ipc_wire::BuildId;
use plough::{ActorError, Address, Portal};
use plough_tests::multi_host::{configure_root, start_daemon};
use plough_tests::netns::{Lab, unavailable};
use std::time::{Duration, Instant};

/// The daemon's lease (long enough that a busy machine never loses the host mid-run).
const LEASE: Duration = Duration::from_secs(10);
/// What any one step (the daemon's start) may take.
const STEP: Duration = Duration::from_secs(15);
/// The whole of one block of measurements.
const BLOCK: Duration = Duration::from_secs(120);

struct Stat {
    name: String,
    unit: &'static str,
    samples: Vec<f64>,
}

impl Stat {
    fn new(name: impl Into<String>, unit: &'static str, mut samples: Vec<f64>) -> Stat {
        samples.sort_by(|a, b| a.total_cmp(b));
        Stat { name: name.into(), unit, samples }
    }
    fn pct(&self, p: f64) -> f64 {
        let i = ((self.samples.len() as f64 - 1.0) * p).round() as usize;
        self.samples[i.min(self.samples.len() - 1)]
    }
}

/// Spawn → first RPC (`spawns` samples, ms) and the round trip of `add` (`calls`
/// samples, µs), through `start`: a nursery's `start_actor` or `start_actor_on`.
async fn measure<F, Fut>(
    root: &plough::Actor,
    spawns: usize,
    calls: usize,
    start: F,
) -> Result<(Vec<f64>, Vec<f64>), ActorError>
where
    F: Fn(plough::Nursery, String) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Portal, ActorError>> + Send,
{
    let mut spawn = Vec::with_capacity(spawns);
    // One unrecorded warm-up spawn first.
    for i in 0..=spawns {
        let start = start.clone();
        let ms = root
            .nursery(|n| async move {
                let t = Instant::now();
                let p = start(n, format!("b{i}")).await?;
                assert_eq!(p.run::<_, i64>("add", (1i64, 2i64)).await?, 3);
                Ok(t.elapsed().as_secs_f64() * 1e3)
            })
            .await?;
        if i > 0 {
            spawn.push(ms);
        }
    }
    let rtt = root
        .nursery(|n| async move {
            let p = start(n, "echo".into()).await?;
            for i in 0..200i64 {
                p.run::<_, i64>("add", (i, 1i64)).await?;
            }
            let mut rtt = Vec::with_capacity(calls);
            for i in 0..calls as i64 {
                let t = Instant::now();
                p.run::<_, i64>("add", (i, 1i64)).await?;
                rtt.push(t.elapsed().as_secs_f64() * 1e6);
            }
            Ok(rtt)
        })
        .await?;
    Ok((spawn, rtt))
}

/// The local rows: a root in this namespace, children running `plough_app`.
fn local(uds: bool, spawns: usize, calls: usize) -> (String, Vec<f64>, Vec<f64>) {
    let runtime = plough::Runtime::new(plough_tests::app::registry())
        .child_program(env!("CARGO_BIN_EXE_plough_app"))
        .configure(|c| {
            c.registry_addr = if uds {
                let dir = plough::ipc_wire::runtime_dir::default_dir();
                Address::Uds(dir.join(format!("hostbench{}@reg.sock", std::process::id())))
            } else {
                "tcp://127.0.0.1:0".parse().expect("an address")
            };
        });
    runtime
        .run(|root| async move {
            let method = root.spawn_method().to_string();
            let body =
                measure(&root, spawns, calls, |n, name| async move { n.start_actor(&name).await });
            let (spawn, rtt) = tokio::time::timeout(BLOCK, body).await.expect("the local block")?;
            Ok((method, spawn, rtt))
        })
        .expect("the local rows")
}

/// The remote rows: a lab of two hosts, `plough-host` on host 0, the root on host 1.
fn remote(lab: &mut Lab, spawns: usize, calls: usize) -> (Vec<f64>, Vec<f64>) {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let ca = tmp.path().join("ca");
    plough_ps::ca::init(&ca).expect("plough ca init");
    plough_ps::ca::issue(&ca, "bench-host", &[lab.host(0).ip.into()], 1).expect("a host pair");
    plough_ps::ca::issue(&ca, "root", &[lab.host(1).ip.into()], 1).expect("the root's pair");
    let app = env!("CARGO_BIN_EXE_plough_app");
    let bins = (env!("CARGO_BIN_EXE_host_daemon"), app);
    let (_pid, addr) = start_daemon(lab, 0, "bench-host", &ca, bins, LEASE, STEP);
    let build = BuildId::of_file(app.as_ref()).expect("the build id of plough_app");
    lab.in_host(1, || {
        let runtime = plough::Runtime::new(plough_tests::app::registry())
            .configure(|c| configure_root(c, "bench-root", &ca, Some(build)));
        runtime
            .run(|root| async move {
                let body = async {
                    let host = root.attach_host(&addr).await?;
                    measure(&root, spawns, calls, move |n, name| {
                        let host = host.clone();
                        async move { n.start_actor_on(&host, &name).await }
                    })
                    .await
                };
                tokio::time::timeout(BLOCK, body).await.expect("the remote block")
            })
            .expect("the remote rows")
    })
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (spawns, calls) = if quick { (5, 1000) } else { (20, 5000) };
    let started = Instant::now();
    if let Some(why) = unavailable() {
        println!("SKIPPED the multi-host rows (remote spawn, RPC across namespaces): {why}");
        return;
    }
    let mut lab = match Lab::new(2) {
        Ok(lab) => lab,
        Err(plough_tests::netns::LabError::Unavailable(why)) => {
            println!("SKIPPED the multi-host rows (remote spawn, RPC across namespaces): {why}");
            return;
        }
        Err(e) => panic!("cannot make the network lab: {e}"),
    };
    let (method, local_spawn, tcp_rtt) = local(false, spawns, calls);
    let (remote_spawn, remote_rtt) = remote(&mut lab, spawns, calls);
    let (_, _, uds_rtt) = local(true, 0, calls);
    let daemon_pids = lab.pids();
    drop(lab);
    // The daemon was SIGKILLed by the lab's drop: sweep its files as the reaper would.
    for pid in daemon_pids {
        plough_tests::clear_killed_actor(pid);
    }
    let dir = plough::fork_prims::marker::default_runtime_dir();
    plough_reaper::uds::sweep(&dir, None, false).expect("sweep the runtime dir");

    let local_rtt = Stat::new("local RPC round trip (tcp, loopback)", "us", tcp_rtt);
    let rows = [
        (
            Stat::new("remote spawn (plough-host, netns, TLS) -> first RPC", "ms", remote_spawn),
            Stat::new(format!("local {method} spawn -> first RPC (tcp)"), "ms", local_spawn),
        ),
        (Stat::new("RPC round trip across namespaces (TLS)", "us", remote_rtt.clone()), local_rtt),
        (
            Stat::new("RPC round trip across namespaces (TLS), next to uds", "us", remote_rtt),
            Stat::new("local RPC round trip (uds)", "us", uds_rtt),
        ),
    ];
    println!(
        "\n{:<54} {:>10} {:>10} {:>12} {:>7}",
        "benchmark", "median", "p99", "floor median", "ratio"
    );
    let mut json = Vec::new();
    for (s, base) in &rows {
        let ratio = s.pct(0.5) / base.pct(0.5);
        println!(
            "{:<54} {:>8.3}{:<2} {:>8.3}{:<2} {:>10} {:>6.2}x",
            s.name,
            s.pct(0.5),
            s.unit,
            s.pct(0.99),
            s.unit,
            format!("{:.3}{}", base.pct(0.5), base.unit),
            ratio
        );
        json.push(serde_json::json!({
            "name": s.name, "unit": s.unit, "median": s.pct(0.5), "p99": s.pct(0.99),
            "baseline": base.name, "baseline_median": base.pct(0.5), "ratio": ratio,
        }));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let out = target.join("plough-bench-hosts.json");
    let text = serde_json::to_string_pretty(&serde_json::json!({ "results": json }))
        .expect("the results as JSON");
    std::fs::write(&out, text).expect("write the JSON results");
    println!(
        "\nwrote {} ({spawns} spawns and {calls} calls per row; total wall time {:.1} s)",
        out.display(),
        started.elapsed().as_secs_f64()
    );
}
