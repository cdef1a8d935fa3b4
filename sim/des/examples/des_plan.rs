//! Capacity planning from the command line until `fleetsim plan` wires the same library calls:
//!
//! `des_plan SCENARIO [--set K=V]... --vary KEY=V1,V2,... [--csv FILE] [--svg FILE]`
//! `des_plan SCENARIO [--set K=V]... --find-max KEY=LOW,HIGH [--integer] [--runs N]`
//!
//! Points run on two threads (one per core); every point is an ordinary deterministic run.

use std::process::ExitCode;

use fleetsim_des::plan;
use fleetsim_scenario::Scenario;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!(
            "usage: des_plan SCENARIO [--set K=V]... (--vary K=V1,V2,... | --find-max K=LO,HI)"
        );
        return ExitCode::from(2);
    };
    let (mut sets, mut vary, mut find, mut csv, mut svg) = (Vec::new(), None, None, None, None);
    let (mut integer, mut runs) = (false, 10usize);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--set" => sets.push(args.next().unwrap_or_default()),
            "--vary" => vary = args.next(),
            "--find-max" => find = args.next(),
            "--csv" => csv = args.next(),
            "--svg" => svg = args.next(),
            "--integer" => integer = true,
            "--runs" => runs = args.next().and_then(|n| n.parse().ok()).unwrap_or(runs),
            other => {
                eprintln!("unknown argument {other:?}");
                return ExitCode::from(2);
            }
        }
    }
    let loader = |extra: &[String]| -> Result<Scenario, String> {
        let all: Vec<String> = sets.iter().chain(extra).cloned().collect();
        fleetsim_scenario::load(&path, &all).map_err(|d| d.to_string())
    };
    let split = |spec: &str| -> Option<(String, Vec<String>)> {
        let (key, values) = spec.split_once('=')?;
        Some((
            key.to_string(),
            values.split(',').map(str::to_string).collect(),
        ))
    };
    if let Some((key, values)) = vary.as_deref().and_then(split) {
        let rows = match plan::sweep(&loader, &key, &values, 2) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("plan: {e}");
                return ExitCode::from(1);
            }
        };
        print!("{}", plan::render_table(&key, &rows));
        let write = |file: &Option<String>, text: String| {
            if let Some(f) = file
                && let Err(e) = std::fs::write(f, text)
            {
                eprintln!("{f}: {e}");
            }
        };
        write(&csv, plan::render_csv(&key, &rows));
        write(&svg, plan::render_svg(&key, &rows));
        return ExitCode::SUCCESS;
    }
    if let Some((key, values)) = find.as_deref().and_then(split) {
        let bounds: Vec<f64> = values.iter().filter_map(|v| v.parse().ok()).collect();
        let [low, high] = bounds[..] else {
            eprintln!("--find-max KEY=LOW,HIGH needs two numbers");
            return ExitCode::from(2);
        };
        return match plan::find_max(&loader, &key, low, high, integer, runs) {
            Ok(m) => {
                print!("{}", plan::render_table(&key, &m.tried));
                match m.first_failing {
                    Some(f) => println!("largest passing {key} = {} (fails at {f})", m.best),
                    None => println!("{key} = {} still passes (raise the high end)", m.best),
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("plan: {e}");
                ExitCode::from(1)
            }
        };
    }
    eprintln!("give --vary KEY=V1,V2,... or --find-max KEY=LOW,HIGH");
    ExitCode::from(2)
}
