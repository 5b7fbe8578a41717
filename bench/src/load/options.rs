//! The command line: the two binaries, the cases, the payloads and the
//! timings.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    H2,
    H1,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::H2 => "h2",
            Proto::H1 => "h1",
        }
    }
    pub fn alpn(self) -> &'static [u8] {
        match self {
            Proto::H2 => b"h2",
            Proto::H1 => b"http/1.1",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    Ours,
    Floor,
}

impl Which {
    pub fn name(self) -> &'static str {
        match self {
            Which::Ours => "ours",
            Which::Floor => "floor",
        }
    }
}

pub struct Opts {
    pub ours: PathBuf,
    pub floor: PathBuf,
    pub workdir: PathBuf,
    pub decide: Option<PathBuf>,
    pub warmup: Duration,
    pub duration: Duration,
    /// Paired rounds per case: each runs both servers, the order alternating.
    pub rounds: usize,
    /// Protocol and number of concurrent workers, each with every payload.
    pub cases: Vec<(Proto, usize)>,
    pub payloads: Vec<String>,
    pub h2_conns: Option<usize>,
    pub dump: Option<PathBuf>,
}

/// `h2/16,h1/64`: a protocol and a concurrency each.
fn cases(v: &str) -> anyhow::Result<Vec<(Proto, usize)>> {
    v.split(',')
        .map(|case| {
            let (p, c) = case
                .split_once('/')
                .with_context(|| format!("--cases: PROTO/CONCURRENCY, not {case}"))?;
            let proto = match p {
                "h2" => Proto::H2,
                "h1" | "http1" => Proto::H1,
                _ => bail!("--cases: h2 or h1, not {p}"),
            };
            Ok((proto, c.parse::<usize>()?.max(1)))
        })
        .collect()
}

pub fn parse_opts() -> anyhow::Result<Opts> {
    let mut o = Opts {
        ours: "target/release/kubevirt-reboot-webhook".into(),
        floor: "target/release/floor".into(),
        workdir: "target/bench".into(),
        decide: None,
        warmup: Duration::from_millis(300),
        duration: Duration::from_millis(1500),
        rounds: 5,
        cases: vec![(Proto::H2, 16), (Proto::H1, 64)],
        payloads: vec![
            "vmi-6k".into(),
            "vm".into(),
            "vm-denied".into(),
            "vmi-500k".into(),
        ],
        h2_conns: None,
        dump: None,
    };
    let secs = |v: &str| -> anyhow::Result<Duration> { Ok(Duration::from_secs_f64(v.parse()?)) };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let v = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--ours" => o.ours = v.into(),
            "--floor" => o.floor = v.into(),
            "--workdir" => o.workdir = v.into(),
            "--decide" => o.decide = Some(v.into()),
            "--warmup" => o.warmup = secs(&v)?,
            "--duration" => o.duration = secs(&v)?,
            "--rounds" => o.rounds = v.parse::<usize>()?.max(1),
            "--h2-conns" => o.h2_conns = Some(v.parse::<usize>()?.max(1)),
            "--cases" => o.cases = cases(&v)?,
            "--payload" => o.payloads = v.split(',').map(str::to_owned).collect(),
            "--dump-payloads" => o.dump = Some(v.into()),
            _ => bail!("unknown flag {flag}"),
        }
    }
    Ok(o)
}
