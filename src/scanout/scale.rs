//! How a guest scanout fills its window.

use serde::{Deserialize, Serialize};

/// How a guest scanout fills its window (`scanway window --scale`, the configuration's
/// `scale`, `Super+S`). Written `resize-guest`, `fit` or `1:1`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ScaleMode {
    /// The guest is asked to switch to the window's size (the picture is scaled to fit meanwhile).
    #[default]
    ResizeGuest,
    /// The picture is scaled to fit the window, keeping its aspect ratio.
    Fit,
    /// One guest pixel per output pixel, from the window's top-left corner (clipped).
    #[serde(rename = "1:1")]
    OneToOne,
}

impl ScaleMode {
    /// Every mode, in the order `Super+S` cycles through them.
    pub const ALL: [ScaleMode; 3] = [ScaleMode::ResizeGuest, ScaleMode::Fit, ScaleMode::OneToOne];

    /// The mode's name: `resize-guest`, `fit`, `1:1`.
    pub fn name(self) -> &'static str {
        match self {
            ScaleMode::ResizeGuest => "resize-guest",
            ScaleMode::Fit => "fit",
            ScaleMode::OneToOne => "1:1",
        }
    }
}

impl std::fmt::Display for ScaleMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ScaleMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ScaleMode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("`{s}`: expected resize-guest, fit or 1:1"))
    }
}

#[cfg(test)]
mod tests {
    use super::ScaleMode;

    #[test]
    fn names_round_trip() {
        for mode in ScaleMode::ALL {
            assert_eq!(mode.name().parse::<ScaleMode>(), Ok(mode));
            assert_eq!(serde_json::to_value(mode).unwrap(), mode.name());
        }
        assert!("stretch".parse::<ScaleMode>().is_err());
    }
}
