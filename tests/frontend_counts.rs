//! Parameter and MAC counts of every zoo model, and the resnet20 tensor list against the
//! pretrained weights file.

use resnetc::frontend::compile_file;
use resnetc::ir::{Graph, Mode, Op};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn compile(name: &str) -> Graph {
    let path = root().join("models").join(format!("{name}.resnet"));
    match compile_file(&path, Mode::Inference, &[]) {
        Ok(g) => g,
        Err(d) => panic!("{name} does not compile:\n{}", d.render_plain()),
    }
}

fn counts(name: &str) -> (u64, u64) {
    let g = compile(name);
    (g.param_count(), g.macs())
}

#[test]
fn published_counts() {
    let table: &[(&str, u64, u64)] = &[
        ("resnet18", 11_689_512, 1_814_073_344),
        ("resnet34", 21_797_672, 3_663_761_408),
        ("resnet50", 25_557_032, 4_089_184_256),
        ("resnet101", 44_549_160, 7_801_405_440),
        ("resnet152", 60_192_808, 11_513_626_624),
        ("resnet20", 269_722, 40_551_040),
        ("resnet32", 464_154, 68_862_592),
        ("resnet44", 658_586, 97_174_144),
        ("resnet56", 853_018, 125_485_696),
        ("resnet110", 1_727_962, 252_887_680),
    ];
    for &(name, params, macs) in table {
        assert_eq!(counts(name), (params, macs), "{name}");
    }
}

// ---- independent counts for the variants, from the architecture --------------------------

/// Output size of a window (floor mode).
fn out(h: u64, k: u64, s: u64, p: u64) -> u64 {
    (h + 2 * p - k) / s + 1
}

struct Acc {
    params: u64,
    macs: u64,
}

impl Acc {
    fn conv(&mut self, cin: u64, cout: u64, k: u64, s: u64, h: u64) -> u64 {
        let o = out(h, k, s, k / 2);
        self.params += cin * cout * k * k;
        self.macs += cout * o * o * cin * k * k;
        o
    }
    fn bn(&mut self, c: u64) {
        self.params += 2 * c;
    }
    fn fc(&mut self, cin: u64, cout: u64, bias: bool) {
        self.params += cin * cout + if bias { cout } else { 0 };
        self.macs += cin * cout;
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Sc {
    A,
    B,
    C,
    None,
}

/// Basic-block networks: ImageNet (`imagenet = true`) or CIFAR stems, stage widths and counts.
fn basic_net(imagenet: bool, widths: &[u64], counts: &[u64], sc: Sc, classes: u64) -> (u64, u64) {
    let mut a = Acc { params: 0, macs: 0 };
    let (mut h, mut c) = if imagenet {
        let h = a.conv(3, 64, 7, 2, 224);
        a.bn(64);
        (out(h, 3, 2, 1), 64)
    } else {
        let h = a.conv(3, 16, 3, 1, 32);
        a.bn(16);
        (h, 16)
    };
    for (i, (&w, &n)) in widths.iter().zip(counts).enumerate() {
        for j in 0..n {
            let s = if i > 0 && j == 0 { 2 } else { 1 };
            let h2 = a.conv(c, w, 3, s, h);
            a.bn(w);
            a.conv(w, w, 3, 1, h2);
            a.bn(w);
            let changed = s != 1 || c != w;
            if sc == Sc::C || (sc == Sc::B && changed) {
                a.conv(c, w, 1, s, h); // 1x1, pad 0 (k / 2 = 0)
                a.bn(w);
            }
            h = h2;
            c = w;
        }
    }
    a.fc(c, classes, true);
    (a.params, a.macs)
}

#[test]
fn variant_counts() {
    let im = [64, 128, 256, 512];
    let cifar = [16, 32, 64];
    // The formula reproduces the published figures, so it can be trusted for the variants.
    assert_eq!(
        basic_net(true, &im, &[3, 4, 6, 3], Sc::B, 1000),
        counts("resnet34")
    );
    assert_eq!(
        basic_net(false, &cifar, &[3, 3, 3], Sc::A, 10),
        counts("resnet20")
    );
    assert_eq!(
        basic_net(true, &im, &[3, 4, 6, 3], Sc::A, 1000),
        counts("resnet34_a")
    );
    assert_eq!(
        basic_net(true, &im, &[3, 4, 6, 3], Sc::C, 1000),
        counts("resnet34_c")
    );
    assert_eq!(
        basic_net(true, &im, &[2, 2, 2, 2], Sc::None, 1000),
        counts("plain18")
    );
    assert_eq!(
        basic_net(true, &im, &[3, 4, 6, 3], Sc::None, 1000),
        counts("plain34")
    );
    assert_eq!(
        basic_net(false, &cifar, &[3, 3, 3], Sc::None, 10),
        counts("plain20")
    );
    assert_eq!(
        basic_net(false, &cifar, &[9, 9, 9], Sc::None, 10),
        counts("plain56")
    );
    // Option A is parameter-free: resnet34_a has exactly the parameters of plain34.
    assert_eq!(counts("resnet34_a").0, counts("plain34").0);
}

/// Pre-activation / wide networks on 32x32: stem conv (no BN), blocks bn-relu-conv-bn-relu-conv
/// with a 1x1 conv (no BN) shortcut where the shape changes, final BN, fc.
fn preact_net(stem: u64, widths: &[u64], n: u64, classes: u64) -> (u64, u64) {
    let mut a = Acc { params: 0, macs: 0 };
    let mut h = a.conv(3, stem, 3, 1, 32);
    let mut c = stem;
    for (i, &w) in widths.iter().enumerate() {
        for j in 0..n {
            let s = if i > 0 && j == 0 { 2 } else { 1 };
            a.bn(c);
            let h2 = a.conv(c, w, 3, s, h);
            a.bn(w);
            a.conv(w, w, 3, 1, h2);
            if s != 1 || c != w {
                a.conv(c, w, 1, s, h);
            }
            h = h2;
            c = w;
        }
    }
    a.bn(c);
    a.fc(c, classes, true);
    (a.params, a.macs)
}

#[test]
fn user_block_counts() {
    assert_eq!(
        preact_net(64, &[64, 128, 256, 512], 2, 10),
        counts("preact_resnet18")
    );
    // WRN-16-4: 2,748,890 parameters (Zagoruyko & Komodakis report 2.7M).
    let wrn = preact_net(16, &[64, 128, 256], 2, 10);
    assert_eq!(wrn, counts("wrn_16_4"));
    assert_eq!(wrn.0, 2_748_890);
}

#[test]
fn every_zoo_file_compiles_in_both_modes() {
    let mut n = 0;
    for e in std::fs::read_dir(root().join("models")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "resnet") {
            for mode in [Mode::Inference, Mode::Training] {
                if let Err(d) = compile_file(&p, mode, &[]) {
                    panic!("{}:\n{}", p.display(), d.render_plain());
                }
            }
            n += 1;
        }
    }
    assert!(n >= 18, "only {n} zoo files");
}

#[test]
fn family_overrides() {
    let p = root().join("models/resnet20.resnet");
    let g = compile_file(&p, Mode::Inference, &[("n".into(), 9)]).unwrap();
    assert_eq!(g.meta.name, "resnet56");
    assert_eq!((g.param_count(), g.macs()), counts("resnet56"));
}

/// Reads a safetensors header by hand: 8-byte little-endian length, then JSON.
fn safetensors_tensors(path: &Path) -> Option<Vec<(String, Vec<usize>)>> {
    let bytes = std::fs::read(path).ok()?;
    let len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let header: serde_json::Value = serde_json::from_slice(bytes.get(8..8 + len)?).ok()?;
    let mut v: Vec<(String, Vec<usize>)> = header
        .as_object()?
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, t)| {
            let shape = t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            (k.clone(), shape)
        })
        .collect();
    v.sort();
    Some(v)
}

fn param_tensors(g: &Graph) -> Vec<(String, Vec<usize>)> {
    g.params()
        .into_iter()
        .filter(|n| matches!(g.node(*n).op, Op::Param(k) if k.is_model_weight()))
        .map(|n| (g.node(n).name.clone(), g.node(n).shape().dims.clone()))
        .collect()
}

#[test]
fn cifar_parameters_match_pretrained_weights() {
    for name in ["resnet20", "resnet56"] {
        let path = root().join(format!("../shared/data/weights/{name}-cifar10.safetensors"));
        let Some(want) = safetensors_tensors(&path) else {
            eprintln!("notice: {} not found, skipping", path.display());
            continue;
        };
        let mut got = param_tensors(&compile(name));
        got.sort();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn parameters_in_state_dict_order() {
    let g = compile("resnet18");
    let names: Vec<String> = param_tensors(&g).into_iter().map(|(n, _)| n).collect();
    let head: Vec<&str> = names.iter().take(12).map(|s| s.as_str()).collect();
    assert_eq!(
        head,
        [
            "conv1.weight",
            "bn1.weight",
            "bn1.bias",
            "bn1.running_mean",
            "bn1.running_var",
            "layer1.0.conv1.weight",
            "layer1.0.bn1.weight",
            "layer1.0.bn1.bias",
            "layer1.0.bn1.running_mean",
            "layer1.0.bn1.running_var",
            "layer1.0.conv2.weight",
            "layer1.0.bn2.weight",
        ]
    );
    let i = names
        .iter()
        .position(|n| n == "layer2.0.bn2.running_var")
        .unwrap();
    assert_eq!(names[i + 1], "layer2.0.downsample.0.weight");
    assert_eq!(names[i + 2], "layer2.0.downsample.1.weight");
    assert_eq!(names[i + 6], "layer2.1.conv1.weight");
    assert_eq!(&names[names.len() - 2..], ["fc.weight", "fc.bias"]);
    // Bottleneck: conv3/bn3 before the downsample.
    let g = compile("resnet50");
    let names: Vec<String> = param_tensors(&g).into_iter().map(|(n, _)| n).collect();
    let i = names
        .iter()
        .position(|n| n == "layer1.0.bn3.running_var")
        .unwrap();
    assert_eq!(names[i + 1], "layer1.0.downsample.0.weight");
}
