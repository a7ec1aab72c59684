//! Parse + lower time for a generated 1,000-instruction Dockerfile (several
//! stages, ARG/ENV expansion, RUN mounts, heredocs, COPY --from, config
//! edits, annotations). Plain `std::time`, median of 50 runs:
//! `cargo bench -p stromatekt-frontend --bench lower` (goal: < 10 ms).
#![allow(clippy::print_stdout)]

use std::fmt::Write as _;
use std::time::{Duration, Instant};

fn dockerfile(instructions: usize) -> String {
    let mut s = String::from("# syntax=docker/dockerfile:1\nARG BASE=debian:12\nARG VERSION=1.0\n");
    let mut n = 0;
    let mut stage = 0;
    while n < instructions {
        if n % 100 == 0 {
            let _ = writeln!(s, "FROM ${{BASE}} AS stage{stage}");
            let _ = writeln!(s, "ARG VERSION\nENV APP_HOME=/opt/app{stage} PATH=/opt/app{stage}/bin:$PATH");
            n += 3;
            if stage > 0 {
                let _ = writeln!(s, "COPY --from=stage{} /opt/app{}/bin/ /usr/local/bin/", stage - 1, stage - 1);
                n += 1;
            }
            stage += 1;
            continue;
        }
        match n % 10 {
            0 => { let _ = writeln!(s, "RUN --mount=type=cache,target=/var/cache/apt apt-get update && apt-get install -y pkg{n}=${{VERSION}}"); }
            1 => { let _ = writeln!(s, "WORKDIR $APP_HOME/src{n}"); }
            2 => { let _ = writeln!(s, "COPY --chown=1000:1000 src/{n}/ ./"); }
            3 => { let _ = writeln!(s, "ENV STEP{n}=\"value ${{VERSION:-0}} $APP_HOME\" OTHER{n}=x"); }
            4 => { let _ = writeln!(s, "RUN echo ${{STEP{}}} > /tmp/{n} \\\n    && cat /tmp/{n}", n - 1); }
            5 => { let _ = writeln!(s, "LABEL org.example.step{n}=\"$VERSION\""); }
            6 => { let _ = writeln!(s, "# stromatekt:layer l{n}\nRUN <<EOF\nset -e\necho {n} $APP_HOME\nEOF"); }
            7 => { let _ = writeln!(s, "EXPOSE {}/tcp", 8000 + n); }
            8 => { let _ = writeln!(s, "ARG OPT{n}=${{VERSION}}-opt\nUSER 1000:1000"); n += 1; }
            _ => { let _ = writeln!(s, "RUN [\"/bin/sh\", \"-c\", \"true {n}\"]"); }
        }
        n += 1;
    }
    s.push_str("CMD [\"/usr/local/bin/app\"]\n");
    s
}

fn main() {
    let text = dockerfile(1000);
    let opts = frontend::LowerOptions { file: "Dockerfile".into(), ..Default::default() };
    let nodes = match frontend::build_graph(&text, &opts) {
        Ok(g) => g.nodes.len(),
        Err(e) => {
            eprintln!("{}", e.render("Dockerfile", &text));
            std::process::exit(1);
        }
    };
    let mut times: Vec<Duration> = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let g = frontend::build_graph(&text, &opts);
        times.push(t.elapsed());
        std::hint::black_box(g.is_ok());
    }
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "parse+lower, {} lines, {nodes} nodes: median {:.3} ms, min {:.3} ms, max {:.3} ms over {} runs",
        text.lines().count(),
        median.as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
        times.len()
    );
}
