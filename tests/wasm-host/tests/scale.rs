//! The scale scenario's workloads do what the benches claim (no timing here): the probes of
//! every generated bundle hit, miss and are refused as intended inside the real
//! `filter.wasm`, and the memory measurement really fills the worker's session cache.

use anyhow::Result;
use proxy_wasm_test_host::scale::{self, SESSION_COUNTS};
use proxy_wasm_test_host::{Action, Process, wasm_path};

#[test]
fn probes_behave_in_the_vm_for_every_route_count() -> Result<()> {
    let process = Process::load(&wasm_path())?;
    for n in scale::SIZES {
        // `prepare` checks: hits need no sidecar call, `missing` gets 403 / 404.
        let (mut vm, probes) = scale::prepare(&process, n)?;
        assert_eq!(probes.len(), 3);
        for p in &probes {
            let want = if p.probe.name == "missing" {
                Action::Pause
            } else {
                Action::Continue
            };
            assert_eq!(scale::send(&mut vm, p, true)?, want, "{n} {}", p.probe.name);
            assert_eq!(
                scale::send(&mut vm, p, false)?,
                want,
                "{n} {}",
                p.probe.name
            );
        }
        assert!(
            vm.pending_calls()
                .iter()
                .all(|c| !c.path().contains("session"))
        );
    }
    Ok(())
}

#[test]
fn memory_measurement_caches_the_sessions_it_counts() -> Result<()> {
    let m = scale::measure_memory(&wasm_path())?;
    let counts: Vec<usize> = m.sessions.iter().map(|p| p.sessions).collect();
    assert_eq!(counts, SESSION_COUNTS);
    // Sessions take memory; the sizes only grow.
    let mem: Vec<usize> = m.sessions.iter().map(|p| p.linear_memory_bytes).collect();
    assert!(mem.windows(2).all(|w| w[0] <= w[1]), "{mem:?}");
    assert!(mem[2] > mem[0], "{mem:?}");
    // Every session went to Envoy shared data too.
    assert!(
        m.sessions[2].shared_data_bytes > 10_000 * 500,
        "{:?}",
        m.sessions[2]
    );
    assert_eq!(m.bundles.len(), 3);
    assert!(m.bundles[2].1 > m.bundles[0].1);
    eprintln!("{m:?}");
    Ok(())
}
