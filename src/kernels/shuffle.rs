//! Channel shuffle (ShuffleNet; PyTorch `nn.ChannelShuffle`): view
//! `[N, g, C/g, H, W]`, swap axes 1 and 2, flatten back to `[N, C, H, W]`.
//! Output channel `j · g + i` is input channel `i · C/g + j`.

use crate::error::{Error, Result};

/// `x` (`[batch, channels, plane]` with `plane = H · W`) shuffled. Its
/// gradient is the shuffle with `channels / groups` groups (the inverse
/// permutation).
pub fn channel_shuffle<T: Copy + Send + Sync>(
    x: &[T],
    batch: usize,
    channels: usize,
    plane: usize,
    groups: usize,
) -> Result<Vec<T>> {
    let perm = Permutation::shuffle(channels, groups)?;
    let len = batch * channels * plane;
    if x.len() != len {
        return Err(Error::invalid(format!(
            "channel_shuffle: input has {} elements, the shape needs {len}",
            x.len()
        )));
    }
    Ok(super::par_concat(batch * channels, plane, |k| {
        let (n, dst) = (k / channels, k % channels);
        &x[(n * channels + perm.source[dst]) * plane..][..plane]
    }))
}

/// A permutation of channels: output channel `k` is input channel
/// `source[k]`, and input channel `c` goes to output channel `target[c]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permutation {
    pub source: Vec<usize>,
    pub target: Vec<usize>,
}

impl Permutation {
    /// The channel shuffle's: output channel `j · groups + i` is input
    /// channel `i · channels / groups + j`.
    pub fn shuffle(channels: usize, groups: usize) -> Result<Permutation> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            return Err(Error::invalid(format!(
                "channel_shuffle: groups = {groups} must divide the {channels} channels"
            )));
        }
        let per = channels / groups;
        let source: Vec<usize> = (0..channels)
            .map(|k| (k % groups) * per + k / groups)
            .collect();
        let mut target = vec![0; channels];
        for (k, &c) in source.iter().enumerate() {
            target[c] = k;
        }
        Ok(Permutation { source, target })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_pytorch_order_and_inverts() {
        // 6 channels, 2 groups: [0 1 2 | 3 4 5] -> [0 3 1 4 2 5] (PyTorch).
        let x: Vec<u32> = (0..12).collect(); // batch 2, plane 1
        let y = channel_shuffle(&x, 2, 6, 1, 2).unwrap();
        assert_eq!(y, [0, 3, 1, 4, 2, 5, 6, 9, 7, 10, 8, 11]);
        let back = channel_shuffle(&y, 2, 6, 1, 3).unwrap();
        assert_eq!(back, x);
        assert!(channel_shuffle(&x[1..], 2, 6, 1, 2).is_err());
        assert!(
            channel_shuffle(&x, 2, 6, 1, 4)
                .unwrap_err()
                .to_string()
                .contains("groups = 4")
        );
    }
}
