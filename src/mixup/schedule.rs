use std::fmt;
use std::str::FromStr;

use serde_with::{DeserializeFromStr, SerializeDisplay};

/// How α changes over a run's epochs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, SerializeDisplay, DeserializeFromStr)]
pub enum AlphaSchedule {
    /// α every epoch.
    #[default]
    Constant,
    /// α·(e+1)/E over the first E epochs (e counted from 0), then α.
    Ramp {
        /// E.
        epochs: usize,
    },
    /// α, except no mixing at all in the last N epochs (fastai's behaviour).
    OffLast {
        /// N.
        epochs: usize,
    },
}

impl AlphaSchedule {
    /// The factor α is multiplied by in (0-based) `epoch` of `epochs`, or `None` when the
    /// epoch is not mixed.
    pub fn scale(&self, epoch: usize, epochs: usize) -> Option<f64> {
        match *self {
            AlphaSchedule::Constant => Some(1.0),
            AlphaSchedule::Ramp { epochs: ramp } => {
                Some(((epoch + 1) as f64 / ramp.max(1) as f64).min(1.0))
            }
            AlphaSchedule::OffLast { epochs: off } => (epoch + off < epochs).then_some(1.0),
        }
    }

    /// The number of epochs the schedule names, which a run must have.
    pub fn last_epoch_named(&self) -> usize {
        match *self {
            AlphaSchedule::Constant => 0,
            AlphaSchedule::Ramp { epochs } | AlphaSchedule::OffLast { epochs } => epochs,
        }
    }
}

impl fmt::Display for AlphaSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AlphaSchedule::Constant => f.write_str("constant"),
            AlphaSchedule::Ramp { epochs } => write!(f, "ramp:{epochs}"),
            AlphaSchedule::OffLast { epochs } => write!(f, "off-last:{epochs}"),
        }
    }
}

impl FromStr for AlphaSchedule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "bad alpha schedule '{text}': expected constant, ramp:EPOCHS or off-last:EPOCHS"
            )
        };
        let epochs = |n: &str| n.trim().parse::<usize>().map_err(|_| bad());
        match text.split_once(':') {
            None if text == "constant" => Ok(AlphaSchedule::Constant),
            Some(("ramp", n)) => match epochs(n)? {
                0 => Err(format!(
                    "bad alpha schedule '{text}': a ramp lasts at least 1 epoch"
                )),
                epochs => Ok(AlphaSchedule::Ramp { epochs }),
            },
            Some(("off-last", n)) => Ok(AlphaSchedule::OffLast { epochs: epochs(n)? }),
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_at_chosen_epochs() {
        let ramp: AlphaSchedule = "ramp:4".parse().unwrap();
        let scales: Vec<Option<f64>> = (0..6).map(|e| ramp.scale(e, 6)).collect();
        assert_eq!(
            scales,
            [0.25, 0.5, 0.75, 1.0, 1.0, 1.0].map(Some).to_vec(),
            "{ramp}"
        );
        let off: AlphaSchedule = "off-last:2".parse().unwrap();
        let scales: Vec<Option<f64>> = (0..5).map(|e| off.scale(e, 5)).collect();
        assert_eq!(scales, [Some(1.0), Some(1.0), Some(1.0), None, None]);
        assert!((0..5).all(|e| AlphaSchedule::Constant.scale(e, 5) == Some(1.0)));
        assert_eq!(
            "off-last:0".parse::<AlphaSchedule>().unwrap().scale(4, 5),
            Some(1.0)
        );
    }

    #[test]
    fn text_round_trips_and_bad_text_is_refused() {
        for text in ["constant", "ramp:3", "off-last:10"] {
            assert_eq!(text.parse::<AlphaSchedule>().unwrap().to_string(), text);
        }
        for text in ["ramp", "ramp:0", "ramp:x", "linear", "off-last:-1", ""] {
            assert!(text.parse::<AlphaSchedule>().is_err(), "{text}");
        }
    }
}
