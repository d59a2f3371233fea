//! Subspace particles (product quantization): the input axis is cut into `S = N / dim`
//! subspaces of `dim` consecutive inputs, and each subspace has its own codebook of
//! `K` vectors, fitted on the `M` vectors (one per output channel) that lie in it.
//!
//! This is the decomposition the LUT form needs: every particle's dot product with the
//! input's slice of that subspace is computed once and read by every output channel
//! that uses the particle. `K = min(2^bits, M)`; a subspace with fewer distinct vectors
//! than `K` pads its codebook with zero vectors that no index uses.

use rayon::prelude::*;

use super::Matrix;
use super::codebook::fit_codebook;
use super::vector::fit_vectors;

/// A matrix decomposed into one codebook per subspace of `dim` inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct SubspaceDecomposition {
    /// Inputs per subspace (weights per particle).
    pub dim: usize,
    /// Number of subspaces `S` (inputs / `dim`).
    pub subspaces: usize,
    /// Number of output channels `M`.
    pub channels: usize,
    /// Particles per codebook `K`.
    pub particles: usize,
    /// `S x K x dim` values: subspace after subspace, particle after particle.
    pub codebooks: Vec<f64>,
    /// `S x M` indices: for subspace `s` and channel `m`, `index[s * M + m]`.
    pub index: Vec<u8>,
}

impl SubspaceDecomposition {
    /// Particle `p` of subspace `s`.
    pub fn particle(&self, s: usize, p: usize) -> &[f64] {
        let start = (s * self.particles + p) * self.dim;
        &self.codebooks[start..start + self.dim]
    }

    /// The weights as the codebooks rebuild them (row-major, `matrix`'s shape), every
    /// particle value first passed through `round`.
    pub fn decoded(&self, matrix: &Matrix, round: impl Fn(f64) -> f64) -> Vec<f64> {
        let mut out = vec![0.0; matrix.rows * matrix.cols];
        for s in 0..self.subspaces {
            for m in 0..self.channels {
                let p = self.index[s * self.channels + m] as usize;
                for (i, &v) in self.particle(s, p).iter().enumerate() {
                    out[matrix.position(m, s * self.dim + i)] = round(v);
                }
            }
        }
        out
    }
}

/// Decomposes `matrix` into one codebook of `min(2^bits, channels)` particles of `dim`
/// weights per subspace of `dim` inputs. `dim` must divide the number of inputs per
/// channel. Vectors are fitted by k-means++ and Lloyd (seeded with `seed + s` for
/// subspace `s`); scalar particles (`dim == 1`) by the exact 1-D k-means.
pub fn decompose_subspaces(
    matrix: &Matrix,
    dim: usize,
    bits: u32,
    seed: u64,
) -> SubspaceDecomposition {
    let (channels, inputs) = matrix.channels_and_inputs();
    let subspaces = inputs / dim;
    let k = (1usize << bits).min(channels).max(1);
    let fitted: Vec<(Vec<f64>, Vec<u8>)> = (0..subspaces)
        .into_par_iter()
        .map(|s| {
            let points: Vec<f64> = (0..channels)
                .flat_map(|m| (0..dim).map(move |i| matrix.values[matrix.position(m, s * dim + i)]))
                .collect();
            let (mut codebook, index) = if dim == 1 {
                let book = fit_codebook(&points, k);
                (book.particles, book.index)
            } else {
                let stage = fit_vectors(&points, dim, k, seed.wrapping_add(s as u64));
                (stage.codebook, stage.index)
            };
            codebook.resize(k * dim, 0.0);
            (codebook, index)
        })
        .collect();
    let (codebooks, index): (Vec<Vec<f64>>, Vec<Vec<u8>>) = fitted.into_iter().unzip();
    SubspaceDecomposition {
        dim,
        subspaces,
        channels,
        particles: k,
        codebooks: codebooks.concat(),
        index: index.concat(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_subspace_has_its_own_codebook() {
        // [4 inputs, 3 channels], dim 2: subspace 0 is rows 0-1, subspace 1 rows 2-3.
        // Subspace 0 holds the vectors (1,2), (1,2), (5,6); subspace 1 (0,0), (7,8), (0,0).
        #[rustfmt::skip]
        let values = [
            1.0, 1.0, 5.0,
            2.0, 2.0, 6.0,
            0.0, 7.0, 0.0,
            0.0, 8.0, 0.0,
        ];
        let m = Matrix {
            values: &values,
            rows: 4,
            cols: 3,
            channel_axis: 1,
        };
        let d = decompose_subspaces(&m, 2, 1, 0);
        assert_eq!((d.subspaces, d.channels, d.particles), (2, 3, 2));
        let vector = |s: usize, c: usize| d.particle(s, d.index[s * 3 + c] as usize).to_vec();
        assert_eq!(
            [vector(0, 0), vector(0, 1), vector(0, 2)],
            [vec![1.0, 2.0], vec![1.0, 2.0], vec![5.0, 6.0]]
        );
        assert_eq!(
            [vector(1, 0), vector(1, 1), vector(1, 2)],
            [vec![0.0, 0.0], vec![7.0, 8.0], vec![0.0, 0.0]]
        );
        assert_eq!(d.index[0], d.index[1]);
        assert_ne!(d.index[0], d.index[2]);
        assert_eq!(d.decoded(&m, |x| x), values.to_vec());
    }

    #[test]
    fn channels_along_rows_and_more_particles_than_channels() {
        // [2 channels, 4 inputs] (Gemm transB = 1), 4 bits: K = min(16, 2) = 2.
        let values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let m = Matrix {
            values: &values,
            rows: 2,
            cols: 4,
            channel_axis: 0,
        };
        let d = decompose_subspaces(&m, 2, 4, 0);
        assert_eq!((d.subspaces, d.channels, d.particles), (2, 2, 2));
        assert_eq!(d.codebooks.len(), 2 * 2 * 2);
        assert_eq!(d.decoded(&m, |x| x), values.to_vec());
        // Subspace 1 holds (3,4) for channel 0 and (7,8) for channel 1.
        assert_eq!(d.particle(1, d.index[2] as usize), &[3.0, 4.0]);
        assert_eq!(d.particle(1, d.index[3] as usize), &[7.0, 8.0]);
    }

    #[test]
    fn scalar_subspaces_use_exact_kmeans_and_pad_codebooks() {
        // dim 1: every input row is a subspace; row 1 has one distinct value.
        let values = [0.0, 1.0, 10.0, 11.0, 3.0, 3.0, 3.0, 3.0];
        let m = Matrix {
            values: &values,
            rows: 2,
            cols: 4,
            channel_axis: 1,
        };
        let d = decompose_subspaces(&m, 1, 1, 0);
        assert_eq!(d.particles, 2);
        assert_eq!(d.codebooks, vec![0.5, 10.5, 3.0, 0.0]);
        assert_eq!(d.index, vec![0, 0, 1, 1, 0, 0, 0, 0]);
        assert_eq!(
            d.decoded(&m, |x| x),
            vec![0.5, 0.5, 10.5, 10.5, 3.0, 3.0, 3.0, 3.0]
        );
    }
}
