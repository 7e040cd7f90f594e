//! Seeded, stratified, reproducible splits of the training set. The test split is never
//! touched here: nothing is ever chosen on it.

use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};
use serde::{Deserialize, Serialize};

use super::{DataError, ImageSet};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
/// How the official training set is cut into the training and validation splits.
pub struct SplitConfig {
    /// Examples held out of the training set for validation (stratified).
    pub valid_split: usize,
    /// Keep only this many training examples (stratified), after the validation hold-out.
    pub train_subset: Option<usize>,
    /// Keep only this many training examples per class, after the validation hold-out.
    pub labels_per_class: Option<usize>,
}

/// Indices into the full training set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    /// Indices of the training split.
    pub train: Vec<usize>,
    /// Indices of the validation split.
    pub valid: Vec<usize>,
    /// Indices of the examples in neither: the pool a semi-supervised run may take as
    /// unlabelled (empty where the training split keeps every example left).
    pub unlabeled: Vec<usize>,
}

/// Per-class quotas summing to `total`, proportional to `counts` (largest remainders).
fn proportional_quotas(counts: &[usize], total: usize) -> Vec<usize> {
    let all: usize = counts.iter().sum();
    let exact: Vec<f64> = counts
        .iter()
        .map(|&c| c as f64 * total as f64 / all as f64)
        .collect();
    let mut quotas: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
    let mut order: Vec<usize> = (0..counts.len()).collect();
    order.sort_by(|&a, &b| {
        let (fa, fb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
        fb.total_cmp(&fa).then(a.cmp(&b))
    });
    let mut missing = total - quotas.iter().sum::<usize>();
    for class in order.into_iter().cycle() {
        if missing == 0 {
            break;
        }
        if quotas[class] < counts[class] {
            quotas[class] += 1;
            missing -= 1;
        }
    }
    quotas
}

/// Splits `set` as `config` says, drawing from `rng`: class-balanced where labels per class are
/// asked for.
pub fn split<R: Rng + ?Sized>(
    train: &ImageSet,
    classes: usize,
    config: &SplitConfig,
    rng: &mut R,
) -> Result<Split, DataError> {
    if config.train_subset.is_some() && config.labels_per_class.is_some() {
        return Err(DataError::Split(
            "--train-subset and --labels-per-class cannot be used together".into(),
        ));
    }
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &label) in train.labels.iter().enumerate() {
        by_class[label].push(i);
    }
    for members in &mut by_class {
        members.shuffle(rng);
    }
    if config.valid_split >= train.len() {
        return Err(DataError::Split(format!(
            "--valid-split {} leaves no training data out of {} examples",
            config.valid_split,
            train.len()
        )));
    }
    let counts: Vec<usize> = by_class.iter().map(Vec::len).collect();
    let valid_quotas = proportional_quotas(&counts, config.valid_split);
    let mut valid = Vec::new();
    for (members, quota) in by_class.iter_mut().zip(valid_quotas) {
        valid.extend(members.drain(..quota));
    }
    let remaining: Vec<usize> = by_class.iter().map(Vec::len).collect();
    let keep: Vec<usize> = match (config.train_subset, config.labels_per_class) {
        (Some(n), _) => {
            let available: usize = remaining.iter().sum();
            if n == 0 || n > available {
                return Err(DataError::Split(format!(
                    "--train-subset {n} must be between 1 and the {available} training examples left"
                )));
            }
            proportional_quotas(&remaining, n)
        }
        (None, Some(0)) => {
            return Err(DataError::Split(
                "--labels-per-class must be at least 1".into(),
            ));
        }
        (None, Some(n)) => {
            if let Some(class) = remaining.iter().position(|&r| r < n) {
                return Err(DataError::Split(format!(
                    "--labels-per-class {n}: class {class} has only {} training examples",
                    remaining[class]
                )));
            }
            vec![n; classes]
        }
        (None, None) => remaining,
    };
    let (mut train_indices, mut unlabeled) = (Vec::new(), Vec::new());
    for (members, quota) in by_class.iter().zip(keep) {
        train_indices.extend_from_slice(&members[..quota]);
        unlabeled.extend_from_slice(&members[quota..]);
    }
    train_indices.sort_unstable();
    valid.sort_unstable();
    unlabeled.sort_unstable();
    Ok(Split {
        train: train_indices,
        valid,
        unlabeled,
    })
}

/// `count` of the `pool`'s examples, drawn uniformly from `rng` and sorted. Uniformly, not per
/// class: choosing an unlabelled pool by class would read the labels it is meant to lack.
pub fn draw_unlabeled<R: Rng + ?Sized>(
    pool: &[usize],
    count: usize,
    rng: &mut R,
) -> Result<Vec<usize>, DataError> {
    if count > pool.len() {
        return Err(DataError::Split(format!(
            "--unlabeled {count} is more than the {} training examples left without labels",
            pool.len()
        )));
    }
    let mut drawn: Vec<usize> = pool.choose_multiple(rng, count).copied().collect();
    drawn.sort_unstable();
    Ok(drawn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha12Rng;

    fn labelled(labels: Vec<usize>) -> ImageSet {
        ImageSet {
            pixels: vec![0; labels.len()],
            labels,
            channels: 1,
            size: 1,
        }
    }

    fn set_of(labels_per_class: &[usize]) -> ImageSet {
        labelled(
            labels_per_class
                .iter()
                .enumerate()
                .flat_map(|(class, &n)| std::iter::repeat_n(class, n))
                .collect(),
        )
    }

    #[test]
    fn valid_split_is_stratified_disjoint_and_reproducible() {
        let set = set_of(&[100, 50, 50]);
        let config = SplitConfig {
            valid_split: 20,
            ..Default::default()
        };
        let draw = |seed| split(&set, 3, &config, &mut ChaCha12Rng::seed_from_u64(seed)).unwrap();
        let s = draw(1);
        assert_eq!(s.valid.len(), 20);
        assert_eq!(s.train.len(), 180);
        assert_eq!(set.select(&s.valid).class_counts(3), vec![10, 5, 5]);
        assert!(s.valid.iter().all(|v| !s.train.contains(v)));
        assert_eq!(draw(1), s);
        assert_ne!(draw(2), s);
    }

    #[test]
    fn labels_per_class_and_subset() {
        let set = set_of(&[30, 30, 40]);
        let mut rng = ChaCha12Rng::seed_from_u64(3);
        let per_class = SplitConfig {
            valid_split: 10,
            labels_per_class: Some(4),
            ..Default::default()
        };
        let s = split(&set, 3, &per_class, &mut rng).unwrap();
        assert_eq!(set.select(&s.train).class_counts(3), vec![4, 4, 4]);
        let subset = SplitConfig {
            train_subset: Some(10),
            ..Default::default()
        };
        let s = split(&set, 3, &subset, &mut rng).unwrap();
        assert_eq!(set.select(&s.train).class_counts(3), vec![3, 3, 4]);
    }

    #[test]
    fn labelled_validation_and_unlabelled_examples_are_disjoint_and_cover_the_training_set() {
        let set = set_of(&[40, 25, 35]);
        let configs = [
            SplitConfig {
                valid_split: 10,
                labels_per_class: Some(4),
                ..Default::default()
            },
            SplitConfig {
                valid_split: 7,
                train_subset: Some(30),
                ..Default::default()
            },
            SplitConfig {
                valid_split: 10,
                ..Default::default()
            },
        ];
        for config in configs {
            let s = split(&set, 3, &config, &mut ChaCha12Rng::seed_from_u64(4)).unwrap();
            let mut all: Vec<usize> = [&s.train[..], &s.valid, &s.unlabeled].concat();
            all.sort_unstable();
            assert_eq!(all, (0..set.len()).collect::<Vec<_>>(), "{config:?}");
            let expected = set.len() - config.valid_split - s.train.len();
            assert_eq!(s.unlabeled.len(), expected, "{config:?}");
        }
    }

    #[test]
    fn taking_the_pool_draws_nothing_more_from_the_split_stream() {
        // The pool is what the split left: the split still draws only its per-class shuffles,
        // so every earlier run's training and validation examples stay the same.
        let set = set_of(&[40, 25, 35]);
        let config = SplitConfig {
            valid_split: 10,
            labels_per_class: Some(4),
            ..Default::default()
        };
        let mut rng = ChaCha12Rng::seed_from_u64(9);
        let s = split(&set, 3, &config, &mut rng).unwrap();
        let mut replay = ChaCha12Rng::seed_from_u64(9);
        let mut by_class: Vec<Vec<usize>> =
            vec![(0..40).collect(), (40..65).collect(), (65..100).collect()];
        for members in &mut by_class {
            members.shuffle(&mut replay);
        }
        assert_eq!(rng.random::<u64>(), replay.random::<u64>());
        assert_eq!(s.unlabeled.len(), 100 - 10 - 12);
    }

    #[test]
    fn a_drawn_unlabelled_count_is_seeded_and_within_the_pool() {
        let pool: Vec<usize> = (100..200).step_by(2).collect();
        let draw =
            |seed, count| draw_unlabeled(&pool, count, &mut ChaCha12Rng::seed_from_u64(seed));
        let drawn = draw(1, 20).unwrap();
        assert_eq!(drawn.len(), 20);
        assert!(drawn.windows(2).all(|w| w[0] < w[1]));
        assert!(drawn.iter().all(|i| pool.contains(i)));
        assert_eq!(draw(1, 20).unwrap(), drawn);
        assert_ne!(draw(2, 20).unwrap(), drawn);
        assert_eq!(draw(3, 50).unwrap(), pool);
        let error = draw(1, 51).unwrap_err().to_string();
        assert!(
            error.contains("--unlabeled 51 is more than the 50"),
            "{error}"
        );
    }

    #[test]
    fn an_unlabelled_set_holds_the_images_and_nothing_of_their_labels() {
        let set = ImageSet {
            pixels: (0..24).collect(),
            labels: vec![0, 1, 2, 0, 1, 2],
            channels: 1,
            size: 2,
        };
        let pool = set.unlabeled(&[4, 1]);
        assert_eq!(pool.len(), 2);
        assert_eq!(pool.image(0), set.image(4));
        assert_eq!(pool.image(1), set.image(1));
        // The same images with other labels make the same pool.
        let relabelled = ImageSet {
            labels: vec![2, 2, 2, 2, 2, 2],
            ..set.clone()
        };
        assert_eq!(relabelled.unlabeled(&[4, 1]), pool);
    }

    #[test]
    fn impossible_splits_are_errors() {
        let set = set_of(&[3, 3]);
        let mut rng = ChaCha12Rng::seed_from_u64(0);
        let too_many =
            |config: SplitConfig, rng: &mut ChaCha12Rng| split(&set, 2, &config, rng).is_err();
        assert!(too_many(
            SplitConfig {
                valid_split: 6,
                ..Default::default()
            },
            &mut rng
        ));
        assert!(too_many(
            SplitConfig {
                labels_per_class: Some(4),
                ..Default::default()
            },
            &mut rng
        ));
        assert!(too_many(
            SplitConfig {
                labels_per_class: Some(0),
                ..Default::default()
            },
            &mut rng
        ));
        assert!(too_many(
            SplitConfig {
                train_subset: Some(7),
                ..Default::default()
            },
            &mut rng
        ));
    }
}
