//! Data pipeline: CIFAR-10 binary files (real and damaged), preprocessing, augmentation,
//! the background loader, and image decoding / image folders / the ImageNet class index.

mod common;
use common::{shared, temp_dir};

use std::path::PathBuf;
use std::sync::Arc;

use resnetc_runtime::data::augment::crop_flip;
use resnetc_runtime::data::cifar::cifar_split_files;
use resnetc_runtime::data::image_folder::resize_shorter;
use resnetc_runtime::data::{
    class_names, load_cifar_dir, load_cifar_files, load_image_chw, BatchLoader, ClassIndex,
    CropFlip, ImageFolder, ImageSet, LoaderConfig, Normalize, Split,
};
use resnetc_runtime::rng::Rng;
use resnetc_runtime::RuntimeError;

/// `n` synthetic CIFAR records; record i has label i % 10 and pixels (i + j) % 251.
fn records(n: usize, first: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for i in first..first + n {
        v.push((i % 10) as u8);
        v.extend((0..3072).map(|j| ((i + j) % 251) as u8));
    }
    v
}

// ---------------------------------------------------------------- CIFAR

#[test]
fn real_cifar_test_batch() {
    let Some(data) = shared() else { return };
    let dir = data.join("cifar10");
    let raw = std::fs::read(dir.join("test_batch.bin")).unwrap();
    let set = load_cifar_dir(&dir, Split::Test).unwrap();
    assert_eq!(set.len(), 1000);
    assert_eq!(set.images.len(), 1000 * 3072);
    assert_eq!(set.labels[0], raw[0]);
    assert_eq!(set.image(0), &raw[1..3073]);
    assert_eq!(set.labels[999], raw[999 * 3073]);
    assert_eq!(set.image(999), &raw[999 * 3073 + 1..1000 * 3073]);
    let mut hist = [0usize; 10];
    for &l in &set.labels {
        hist[l as usize] += 1;
    }
    assert!(
        hist.iter().all(|&c| c > 50),
        "all 10 classes present: {hist:?}"
    );
    assert_eq!(hist.iter().sum::<usize>(), 1000);
    let names = class_names(&dir).unwrap();
    assert_eq!(names.len(), 10);
    assert_eq!(names[0], "airplane");
    assert_eq!(names[9], "truck");
}

#[test]
fn real_cifar_train_split_in_numeric_order() {
    let Some(data) = shared() else { return };
    let dir = data.join("cifar10");
    let files = cifar_split_files(&dir, Split::Train).unwrap();
    let names: Vec<_> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "data_batch_1.bin",
            "data_batch_2.bin",
            "data_batch_3.bin",
            "data_batch_4.bin"
        ]
    );
    let set = load_cifar_dir(&dir, Split::Train).unwrap();
    assert_eq!(set.len(), 4000);
    let b2 = std::fs::read(dir.join("data_batch_2.bin")).unwrap();
    assert_eq!(set.labels[1000], b2[0]);
    assert_eq!(set.image(1000), &b2[1..3073]);
}

#[test]
fn cifar_numeric_sort_and_errors() {
    let dir = temp_dir("cifar");
    // data_batch_10 must come after data_batch_2.
    std::fs::write(dir.join("data_batch_10.bin"), records(1, 100)).unwrap();
    std::fs::write(dir.join("data_batch_2.bin"), records(2, 20)).unwrap();
    std::fs::write(dir.join("notes.txt"), "x").unwrap();
    let set = load_cifar_dir(&dir, Split::Train).unwrap();
    assert_eq!(set.labels, vec![0, 1, 0]); // 20 % 10, 21 % 10, 100 % 10
    assert_eq!(set.image(2)[0], 100); // (100 + 0) % 251

    // No test file: the error lists what it looked for.
    let e = load_cifar_dir(&dir, Split::Test).unwrap_err();
    let m = e.to_string();
    assert!(matches!(e, RuntimeError::Format { .. }));
    assert!(
        m.contains("test_batch.bin") && m.contains(dir.to_str().unwrap()),
        "{m}"
    );
    let empty = temp_dir("cifar-empty");
    let m = load_cifar_dir(&empty, Split::Train)
        .unwrap_err()
        .to_string();
    assert!(
        m.contains("data_batch_1.bin") && m.contains("cifar-10-batches-bin"),
        "{m}"
    );

    // Truncated: 3 full records then 100 bytes of the 4th (record index 3).
    let trunc = dir.join("test_batch.bin");
    let mut bytes = records(4, 0);
    bytes.truncate(3 * 3073 + 100);
    std::fs::write(&trunc, &bytes).unwrap();
    let m = load_cifar_dir(&dir, Split::Test).unwrap_err().to_string();
    assert!(
        m.contains("test_batch.bin") && m.contains("truncated"),
        "{m}"
    );
    assert!(
        m.contains("record 3") && m.contains("byte offset 9219") && m.contains("100 of its 3,073"),
        "{m}"
    );

    // Bad label in record 2.
    let mut bytes = records(4, 0);
    bytes[2 * 3073] = 11;
    std::fs::write(&trunc, &bytes).unwrap();
    let m = load_cifar_files(std::slice::from_ref(&trunc))
        .unwrap_err()
        .to_string();
    assert!(
        m.contains("record 2") && m.contains("label 11") && m.contains("0-9"),
        "{m}"
    );

    // Empty file and CIFAR-100-sized file.
    std::fs::write(&trunc, b"").unwrap();
    assert!(load_cifar_files(std::slice::from_ref(&trunc))
        .unwrap_err()
        .to_string()
        .contains("empty"));
    std::fs::write(&trunc, vec![0u8; 3074 * 2]).unwrap();
    let m = load_cifar_files(std::slice::from_ref(&trunc))
        .unwrap_err()
        .to_string();
    assert!(m.contains("CIFAR-100"), "{m}");

    // Class names: fallback when missing, error when malformed.
    assert_eq!(class_names(&dir).unwrap()[3], "cat");
    std::fs::write(dir.join("batches.meta.txt"), "a\nb\n").unwrap();
    let m = class_names(&dir).unwrap_err().to_string();
    assert!(
        m.contains("batches.meta.txt") && m.contains("found 2"),
        "{m}"
    );
    std::fs::remove_dir_all(dir).unwrap();
    std::fs::remove_dir_all(empty).unwrap();
}

// ---------------------------------------------------------------- preprocessing

#[test]
fn normalize_matches_formula() {
    let n = Normalize::imagenet();
    let img: Vec<u8> = vec![
        0, 255, 128, 7, /* G */ 0, 255, 1, 2, /* B */ 3, 4, 5, 255,
    ];
    let out = n.apply_vec(&img, 4).unwrap();
    for c in 0..3 {
        for i in 0..4 {
            let px = img[c * 4 + i];
            let want = ((px as f32 * (1.0 / 255.0)) - n.mean[c]) / n.std[c];
            assert_eq!(out[c * 4 + i], want);
        }
    }
    assert!((out[0] - (-0.485 / 0.229)).abs() < 1e-6);
    assert!((out[1] - ((1.0 - 0.485) / 0.229)).abs() < 1e-6);
    // Batches of two images; wrong lengths and bad stds are errors, not panics.
    let two = [img.clone(), img.clone()].concat();
    assert_eq!(n.apply_vec(&two, 4).unwrap()[12..], out[..]);
    assert!(n.apply_vec(&img[..11], 4).is_err());
    assert!(Normalize::new(1.0, vec![0.0; 3], vec![1.0, 0.0, 1.0]).is_err());
    assert!(Normalize::new(1.0, vec![0.0; 3], vec![1.0; 2]).is_err());
    assert_eq!(Normalize::raw(3).apply_vec(&img, 4).unwrap()[1], 255.0);
}

// ---------------------------------------------------------------- augmentation

fn test_image(c: usize, h: usize, w: usize) -> Vec<u8> {
    (0..c * h * w).map(|i| (i % 250 + 1) as u8).collect() // never 0, so padding is visible
}

#[test]
fn crop_flip_geometry() {
    let (c, h, w) = (3, 8, 6);
    let img = test_image(c, h, w);
    let mut out = vec![0u8; img.len()];
    // Centre window = identity.
    crop_flip(&img, c, h, w, 4, 4, 4, false, &mut out);
    assert_eq!(out, img);
    // Flip only: every row mirrored, in every channel.
    crop_flip(&img, c, h, w, 4, 4, 4, true, &mut out);
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                assert_eq!(
                    out[ch * h * w + y * w + x],
                    img[ch * h * w + y * w + (w - 1 - x)]
                );
            }
        }
    }
    // Top-left window: shifted down/right by 4 with raw zero padding on the top/left.
    crop_flip(&img, c, h, w, 4, 0, 0, false, &mut out);
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                let v = out[ch * h * w + y * w + x];
                if y < 4 || x < 4 {
                    assert_eq!(v, 0);
                } else {
                    assert_eq!(v, img[ch * h * w + (y - 4) * w + (x - 4)]);
                }
            }
        }
    }
    // Bottom-right window with flip: shifted up/left, then mirrored.
    crop_flip(&img, c, h, w, 2, 4, 4, true, &mut out);
    for y in 0..h {
        for x in 0..w {
            let cx = w - 1 - x; // crop column before the flip
            let (sy, sx) = (y + 2, cx + 2);
            let want = if sy < h && sx < w {
                img[sy * w + sx]
            } else {
                0
            };
            assert_eq!(out[y * w + x], want, "y {y} x {x}");
        }
    }
}

#[test]
fn augmentation_is_reproducible_and_covers_all_offsets() {
    let img = test_image(3, 32, 32);
    let aug = CropFlip::default();
    let run = |seed| {
        let mut rng = Rng::new(seed);
        let mut outs = Vec::new();
        for _ in 0..20 {
            let mut o = vec![0u8; img.len()];
            aug.apply(&img, 3, 32, 32, &mut rng, &mut o);
            outs.push(o);
        }
        outs
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
    let mut rng = Rng::new(1);
    let mut tops = [0usize; 9];
    let mut lefts = [0usize; 9];
    let mut flips = 0;
    for _ in 0..9000 {
        let (t, l, f) = aug.draw(&mut rng);
        tops[t] += 1;
        lefts[l] += 1;
        flips += f as usize;
    }
    assert!(
        tops.iter().chain(&lefts).all(|&c| (800..1200).contains(&c)),
        "{tops:?} {lefts:?}"
    );
    assert!(
        (4200..4800).contains(&flips),
        "flip probability 1/2: {flips}"
    );
    // No flip when disabled.
    let noflip = CropFlip {
        pad: 4,
        flip: false,
    };
    assert!((0..100).all(|_| !noflip.draw(&mut rng).2));
}

// ---------------------------------------------------------------- loader

fn small_set(n: usize) -> Arc<ImageSet> {
    let (c, h, w) = (3, 4, 4);
    let images: Vec<u8> = (0..n * c * h * w).map(|i| ((i * 7) % 256) as u8).collect();
    let labels = (0..n).map(|i| i % 10).collect();
    Arc::new(ImageSet::new(images, labels, [c, h, w]).unwrap())
}

#[test]
fn loader_is_deterministic_with_partial_last_batch() {
    let data = small_set(23);
    let cfg = LoaderConfig::train(5, Normalize::imagenet(), 77);
    let a = BatchLoader::new(data.clone(), cfg.clone()).unwrap();
    let b = BatchLoader::new(data.clone(), cfg.clone()).unwrap();
    assert_eq!(a.num_batches(), 5);
    let ea: Vec<_> = a.epoch(3).collect();
    // Consume b slowly to change the timing.
    let eb: Vec<_> = b
        .epoch(3)
        .inspect(|_| std::thread::sleep(std::time::Duration::from_millis(2)))
        .collect();
    assert_eq!(ea, eb);
    assert_eq!(
        ea.iter().map(|b| b.n).collect::<Vec<_>>(),
        vec![5, 5, 5, 5, 3]
    );
    assert!(ea
        .iter()
        .all(|b| b.images.len() == b.n * 48 && b.labels.len() == b.n));
    // Every sample exactly once per epoch (labels are i % 10; check via the order).
    let mut order = a.order(3);
    order.sort();
    assert_eq!(order, (0..23).collect::<Vec<_>>());
    // Another epoch or seed gives another order.
    assert_ne!(a.order(3), a.order(4));
    let c = BatchLoader::new(data.clone(), LoaderConfig { seed: 78, ..cfg }).unwrap();
    assert_ne!(a.order(3), c.order(3));
    let e4: Vec<_> = a.epoch(4).collect();
    assert_ne!(ea, e4);
    // Labels of the batches follow the epoch order.
    let labels: Vec<usize> = ea.iter().flat_map(|b| b.labels.clone()).collect();
    assert_eq!(
        labels,
        a.order(3)
            .iter()
            .map(|i| data.labels[*i])
            .collect::<Vec<_>>()
    );
}

#[test]
fn eval_loader_keeps_order_and_exact_values() {
    let data = small_set(7);
    let norm = Normalize::imagenet();
    let l = BatchLoader::new(data.clone(), LoaderConfig::eval(4, norm.clone())).unwrap();
    let batches: Vec<_> = l.epoch(0).collect();
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[1].n, 3);
    let all: Vec<f32> = batches.iter().flat_map(|b| b.images.clone()).collect();
    assert_eq!(all, norm.apply_vec(&data.images, 16).unwrap());
    let labels: Vec<usize> = batches.iter().flat_map(|b| b.labels.clone()).collect();
    assert_eq!(labels, data.labels);
    // Same for every epoch.
    assert_eq!(l.epoch(5).collect::<Vec<_>>(), batches);
}

#[test]
fn loader_augmented_pixels_are_padding_or_source_values_and_early_drop_is_fine() {
    // One-channel images with a distinctive value so padding (raw 0) is recognisable after
    // normalization: value(0) = -mean/std.
    let n = 12;
    let data = Arc::new(ImageSet::new(vec![200u8; n * 16], vec![1; n], [1, 4, 4]).unwrap());
    let norm = Normalize::new(1.0 / 255.0, vec![0.5], vec![0.25]).unwrap();
    let cfg = LoaderConfig {
        batch_size: 4,
        shuffle: true,
        augment: Some(CropFlip { pad: 2, flip: true }),
        normalize: norm.clone(),
        seed: 1,
    };
    let l = BatchLoader::new(data, cfg).unwrap();
    let (zero, full) = (norm.value(0, 0), norm.value(0, 200));
    let mut saw_zero = false;
    for b in l.epoch(0) {
        for v in &b.images {
            assert!(*v == zero || *v == full);
            saw_zero |= *v == zero;
        }
    }
    assert!(saw_zero, "padding must appear in some crops");
    // Dropping the iterator after one batch must not hang (producer blocked on the channel).
    let mut it = l.epoch(1);
    assert!(it.next().is_some());
    drop(it);
    // Bad configurations are errors.
    let d = small_set(2);
    assert!(BatchLoader::new(d.clone(), LoaderConfig::eval(0, Normalize::imagenet())).is_err());
    assert!(BatchLoader::new(d, LoaderConfig::eval(2, Normalize::raw(1))).is_err());
    assert!(ImageSet::new(vec![0; 10], vec![0], [3, 2, 2]).is_err());
}

// ---------------------------------------------------------------- images

#[test]
fn resize_rule() {
    assert_eq!(resize_shorter(224), 256);
    assert_eq!(resize_shorter(32), 32);
    assert_eq!(resize_shorter(64), 73); // round(64 * 256 / 224) = round(73.14)
    assert_eq!(resize_shorter(299), 342); // round(341.7)
}

#[test]
fn real_imagenet_photos_decode_to_224() {
    let Some(data) = shared() else { return };
    let dir = data.join("imagenet");
    let mut photos: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    photos.sort();
    assert_eq!(photos.len(), 20);
    let mut non_square = 0;
    // Decoding every photo twice is slow in debug; the first 3 plus the non-square one suffice.
    for (i, p) in photos.iter().enumerate() {
        let (w, h) = image::image_dimensions(p).unwrap();
        if w == h && i >= 3 {
            continue;
        }
        if w != h {
            non_square += 1;
        }
        let chw = load_image_chw(p, 224, 224).unwrap();
        assert_eq!(chw.len(), 3 * 224 * 224, "{}", p.display());
        let mean = chw.iter().map(|&v| v as f64).sum::<f64>() / chw.len() as f64;
        assert!(mean > 10.0 && mean < 245.0, "{}: mean {mean}", p.display());
        let small = load_image_chw(p, 32, 32).unwrap();
        assert_eq!(small.len(), 3 * 32 * 32);
    }
    assert_eq!(non_square, 1, "README: one photo is not square");

    let idx = ClassIndex::load(dir.join("imagenet_class_index.json")).unwrap();
    assert_eq!(idx.len(), 1000);
    assert_eq!(idx.name(0), Some("tench"));
    assert_eq!(idx.wnids[0], "n01440764");
    assert_eq!(idx.name(1), Some("goldfish"));
    assert_eq!(idx.name(1000), None);
}

#[test]
fn exact_center_crop_and_image_folder() {
    let root = temp_dir("folder");
    // A 20x10 (w x h) PNG with pixel (x, y) = (x*10, y*20, 7). Output 10x10 < 64: shorter side
    // already 10, so no resize; center crop takes columns 5..15.
    let img = image::RgbImage::from_fn(20, 10, |x, y| {
        image::Rgb([(x * 10) as u8, (y * 20) as u8, 7])
    });
    std::fs::create_dir_all(root.join("b_dog")).unwrap();
    std::fs::create_dir_all(root.join("a_cat")).unwrap();
    img.save(root.join("a_cat/one.png")).unwrap();
    img.save(root.join("a_cat/two.PNG")).unwrap();
    img.save(root.join("b_dog/x.png")).unwrap();
    std::fs::write(root.join("b_dog/readme.txt"), "not an image").unwrap();
    let chw = load_image_chw(root.join("a_cat/one.png"), 10, 10).unwrap();
    for y in 0..10 {
        for x in 0..10 {
            assert_eq!(chw[y * 10 + x], ((x + 5) * 10) as u8);
            assert_eq!(chw[100 + y * 10 + x], (y * 20) as u8);
            assert_eq!(chw[200 + y * 10 + x], 7);
        }
    }
    // Resizing path (out >= 64 resizes 10 -> 73 rows): right size, colour constant in blue.
    let big = load_image_chw(root.join("a_cat/one.png"), 64, 64).unwrap();
    assert_eq!(big.len(), 3 * 64 * 64);
    assert!(big[2 * 4096..].iter().all(|&v| v == 7));

    let f = ImageFolder::open(&root).unwrap();
    assert_eq!(f.classes, vec!["a_cat", "b_dog"]);
    assert_eq!(f.len(), 3);
    let (images, labels) = f.load_all(10, 10).unwrap();
    assert_eq!(labels, vec![0, 0, 1]);
    assert_eq!(images.len(), 3 * 300);
    assert_eq!(&images[..300], &chw[..]);

    // A broken "image" is a Format error naming the file.
    std::fs::write(root.join("b_dog/broken.jpg"), b"definitely not a jpeg").unwrap();
    let e = ImageFolder::open(&root)
        .unwrap()
        .load_all(10, 10)
        .unwrap_err();
    assert!(
        matches!(e, RuntimeError::Format { .. }) && e.to_string().contains("broken.jpg"),
        "{e}"
    );
    // An empty class folder and a root without class folders are errors.
    std::fs::create_dir_all(root.join("c_empty")).unwrap();
    let m = ImageFolder::open(&root).unwrap_err().to_string();
    assert!(m.contains("c_empty"), "{m}");
    let flat = temp_dir("flat");
    img.save(flat.join("a.png")).unwrap();
    let m = ImageFolder::open(&flat).unwrap_err().to_string();
    assert!(m.contains("no class folders"), "{m}");
    // Class index errors.
    let j = flat.join("idx.json");
    std::fs::write(&j, r#"{"0": ["n1", "a"], "2": ["n3", "c"]}"#).unwrap();
    assert!(ClassIndex::load(&j)
        .unwrap_err()
        .to_string()
        .contains("class index 2"));
    std::fs::write(&j, r#"["tench"]"#).unwrap();
    assert!(ClassIndex::load(&j)
        .unwrap_err()
        .to_string()
        .contains("Keras layout"));
    std::fs::remove_dir_all(root).unwrap();
    std::fs::remove_dir_all(flat).unwrap();
}

#[test]
fn real_cifar_through_eval_and_train_loaders() {
    let Some(data) = shared() else { return };
    let set = load_cifar_dir(data.join("cifar10"), Split::Test).unwrap();
    let raw0 = set.image(0).to_vec();
    let labels: Vec<usize> = set.labels.iter().map(|&l| l as usize).collect();
    let images = Arc::new(ImageSet::from(set));
    let norm = Normalize::imagenet();
    let eval = BatchLoader::new(images.clone(), LoaderConfig::eval(256, norm.clone())).unwrap();
    let batches: Vec<_> = eval.epoch(0).collect();
    assert_eq!(
        batches.iter().map(|b| b.n).collect::<Vec<_>>(),
        vec![256, 256, 256, 232]
    );
    assert_eq!(
        batches[0].images[..3072],
        norm.apply_vec(&raw0, 1024).unwrap()[..]
    );
    let got: Vec<usize> = batches.iter().flat_map(|b| b.labels.clone()).collect();
    assert_eq!(got, labels);
    // Training loader: same seed, same batches; labels are a permutation of the data set's.
    let train = || BatchLoader::new(images.clone(), LoaderConfig::train(128, norm.clone(), 2024));
    let a: Vec<_> = train().unwrap().epoch(1).take(2).collect();
    let b: Vec<_> = train().unwrap().epoch(1).take(2).collect();
    assert_eq!(a, b);
    let mut all: Vec<usize> = train().unwrap().epoch(1).flat_map(|b| b.labels).collect();
    let mut sorted = labels.clone();
    all.sort();
    sorted.sort();
    assert_eq!(all, sorted);
}
