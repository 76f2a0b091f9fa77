//! `SignalPipe`: a process-directed signal reaches it whichever thread the kernel picks
//! (threads started before it included, which do not block anything), the handler that
//! was installed before runs for every signal too, and dropping it restores that handler.
//! One test in this binary: signal dispositions are process-wide.

#![allow(unsafe_code, clippy::multiple_unsafe_ops_per_block)]

use plough_fork_prims::SignalPipe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

static PREVIOUS_RAN: AtomicUsize = AtomicUsize::new(0);

extern "C" fn previous(_sig: libc::c_int) {
    PREVIOUS_RAN.fetch_add(1, Ordering::SeqCst);
}

fn action(sig: i32) -> usize {
    // SAFETY: reads the current action into an owned, zeroed buffer.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(sig, std::ptr::null(), &mut act), 0);
        act.sa_sigaction
    }
}

fn set_action(sig: i32, handler: usize) {
    // SAFETY: an all-zero sigaction is valid; `handler` is SIG_IGN or async-signal-safe.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = handler;
        libc::sigemptyset(&mut act.sa_mask);
        assert_eq!(libc::sigaction(sig, &act, std::ptr::null_mut()), 0);
    }
}

fn raise_in_process(sig: i32) {
    let sig = rustix::process::Signal::from_named_raw(sig).unwrap();
    rustix::process::kill_process(rustix::process::getpid(), sig).unwrap();
}

#[test]
fn every_signal_reaches_the_pipe_and_the_previous_handler_from_any_thread() {
    let sig = libc::SIGUSR2;
    set_action(sig, previous as *const () as usize);
    // Threads that block nothing, started first: the kernel may deliver there.
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let stop_rx = std::sync::Arc::new(std::sync::Mutex::new(stop_rx));
    let bystanders: Vec<_> = (0..2)
        .map(|_| {
            let rx = std::sync::Arc::clone(&stop_rx);
            std::thread::spawn(move || {
                let _ = rx.lock().unwrap().recv_timeout(Duration::from_secs(10));
            })
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let pipe = SignalPipe::new(&[sig]).unwrap();
        assert_ne!(action(sig), previous as *const () as usize, "ours is installed");
        for round in 1..=20 {
            raise_in_process(sig);
            let got = tokio::time::timeout(Duration::from_secs(5), pipe.recv()).await;
            assert_eq!(got.expect("the pipe saw it").unwrap(), sig, "round {round}");
            assert_eq!(PREVIOUS_RAN.load(Ordering::SeqCst), round, "the previous handler ran");
        }
        drop(pipe);
    });
    assert_eq!(action(sig), previous as *const () as usize, "restored on drop");

    // A handler installed over ours meanwhile, chaining to ours (what tokio's `ctrl_c()`
    // called inside a root does), stays when the pipe goes; a later pipe reuses ours in
    // that chain instead of installing itself on top (which would make the chain call
    // itself forever), and a second live pipe for the same signal is refused.
    static OURS: AtomicUsize = AtomicUsize::new(0);
    static LATER_RAN: AtomicUsize = AtomicUsize::new(0);
    extern "C" fn later(sig: libc::c_int) {
        LATER_RAN.fetch_add(1, Ordering::SeqCst);
        type Action = extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);
        let ours = OURS.load(Ordering::SeqCst);
        if ours != 0 {
            // SAFETY: `ours` is the SA_SIGINFO handler read from sigaction below.
            let f: Action = unsafe { std::mem::transmute::<usize, Action>(ours) };
            f(sig, std::ptr::null_mut(), std::ptr::null_mut());
        }
    }
    rt.block_on(async {
        let pipe = SignalPipe::new(&[sig, sig]).unwrap();
        OURS.store(action(sig), Ordering::SeqCst);
        set_action(sig, later as *const () as usize);
        drop(pipe);
        assert_eq!(action(sig), later as *const () as usize, "the later handler stays");
        let pipe = SignalPipe::new(&[sig]).unwrap();
        assert_eq!(action(sig), later as *const () as usize, "ours is reused, not stacked");
        let second = SignalPipe::new(&[sig]).unwrap_err();
        assert_eq!(second.kind(), std::io::ErrorKind::AddrInUse, "{second}");
        let before = PREVIOUS_RAN.load(Ordering::SeqCst);
        raise_in_process(sig);
        let got = tokio::time::timeout(Duration::from_secs(5), pipe.recv()).await;
        assert_eq!(got.expect("the pipe saw it").unwrap(), sig);
        assert_eq!(LATER_RAN.load(Ordering::SeqCst), 1);
        assert_eq!(PREVIOUS_RAN.load(Ordering::SeqCst), before + 1, "the chain ran once");
        // Exactly one byte for one signal.
        let again = tokio::time::timeout(Duration::from_millis(50), pipe.recv()).await;
        assert!(again.is_err(), "one signal, one byte: {again:?}");
    });
    OURS.store(0, Ordering::SeqCst);

    // An ignored signal stays ignored: nothing is installed for it.
    set_action(sig, libc::SIG_IGN);
    rt.block_on(async {
        let _pipe = SignalPipe::new(&[sig]).unwrap();
        assert_eq!(action(sig), libc::SIG_IGN);
    });
    set_action(sig, libc::SIG_DFL);
    for _ in &bystanders {
        stop_tx.send(()).unwrap();
    }
    for b in bystanders {
        b.join().unwrap();
    }
}
