//! The size/error trade-off of a model: rewrites at uniform bits and at allocated
//! target sizes, each proved in tract, as rows for a CSV file and an SVG plot.

use std::fmt::Write as _;

use plotters::prelude::*;

use crate::calibrate::Calibrated;
use crate::calibrate::budget::rewrite_to_bits;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::plan::Plan;
use crate::prove::{ProofConfig, validate};
use crate::report::progress_bar;
use crate::rewrite::{Rewritten, rewrite_plan};

/// How the points of a sweep are rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum SweepKind {
    /// Every weight at the same bits.
    Uniform,
    /// Bits allocated per weight for a target average.
    Allocated,
}

impl SweepKind {
    fn label(self) -> &'static str {
        match self {
            SweepKind::Uniform => "uniform",
            SweepKind::Allocated => "allocated",
        }
    }
}

/// One point of a sweep.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SweepRow {
    /// How it was rewritten.
    pub kind: SweepKind,
    /// The bits asked for (uniform bits, or the allocator's target).
    pub setting: f64,
    /// Bits per rewritten weight, every stored byte counted.
    pub bits_per_weight: f64,
    /// Size of the rewritten model in bytes.
    pub model_bytes: usize,
    /// Relative L2 error of the worst output.
    pub rel_l2: f64,
    /// Cosine of the worst output.
    pub cosine: f64,
}

/// Carries out `plan` at each of `uniform` bits and each of `targets` bits per weight
/// and proves every result with `proof`; `config.progress` draws a bar.
pub fn sweep(
    graph: &Graph,
    plan: &Plan,
    config: &Config,
    calibrated: &Calibrated,
    (uniform, targets): (&[u32], &[f64]),
    proof: &ProofConfig,
) -> Result<Vec<SweepRow>> {
    let points = uniform.len() + targets.len();
    let bar = progress_bar(config.progress, points, "sweep points");
    let mut rows = Vec::new();
    let mut add = |kind, setting, out: Rewritten| -> Result<()> {
        let proof = validate(graph.model, &out.model, proof)?;
        let worst = proof
            .outputs
            .iter()
            .max_by(|a, b| a.rel_l2.total_cmp(&b.rel_l2))
            .ok_or_else(|| Error::invalid("the model has no outputs"))?;
        rows.push(SweepRow {
            kind,
            setting,
            bits_per_weight: out.report.bits_per_weight,
            model_bytes: out.report.output_bytes,
            rel_l2: worst.rel_l2,
            cosine: worst.cosine,
        });
        bar.inc(1);
        Ok(())
    };
    if let Some(bits) = uniform.iter().find(|b| !(1..=8).contains(*b)) {
        return Err(Error::Config(format!(
            "--uniform: {bits} bits is outside 1..=8"
        )));
    }
    for &bits in uniform {
        let at_bits = plan.with_bits(config, bits);
        let out = rewrite_plan(graph, &at_bits, config, Some(calibrated.measured()))?;
        add(SweepKind::Uniform, f64::from(bits), out)?;
    }
    for &target in targets {
        let out = rewrite_to_bits(graph, plan, config, calibrated, target)?;
        add(SweepKind::Allocated, target, out)?;
    }
    bar.finish_and_clear();
    Ok(rows)
}

/// The rows as CSV, one line per point after a header.
pub fn csv(rows: &[SweepRow]) -> String {
    let mut s = String::from("kind,setting,bits_per_weight,model_bytes,rel_l2,cosine\n");
    for r in rows {
        let _ = writeln!(
            s,
            "{},{},{:.4},{},{:.6e},{:.6}",
            r.kind.label(),
            r.setting,
            r.bits_per_weight,
            r.model_bytes,
            r.rel_l2,
            r.cosine
        );
    }
    s
}

/// An SVG plot of output error (log scale) against model size, one line per kind.
pub fn plot(rows: &[SweepRow], title: &str) -> Result<String> {
    let fail = |e: &dyn std::fmt::Display| Error::invalid(format!("cannot draw the plot: {e}"));
    let mb = |r: &SweepRow| r.model_bytes as f64 / 1e6;
    let positive: Vec<&SweepRow> = rows.iter().filter(|r| r.rel_l2 > 0.0).collect();
    if positive.is_empty() {
        return Err(Error::invalid(
            "cannot draw the plot: no point has an error above 0",
        ));
    }
    let (x_min, x_max) = positive.iter().fold((f64::MAX, f64::MIN), |(a, b), r| {
        (a.min(mb(r)), b.max(mb(r)))
    });
    let (y_min, y_max) = positive.iter().fold((f64::MAX, f64::MIN), |(a, b), r| {
        (a.min(r.rel_l2), b.max(r.rel_l2))
    });
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let pad = (x_max - x_min).max(1e-3) * 0.05;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(
                (x_min - pad)..(x_max + pad),
                ((y_min * 0.7)..(y_max * 1.4)).log_scale(),
            )
            .map_err(|e| fail(&e))?;
        chart
            .configure_mesh()
            .x_desc("model size (MB)")
            .y_desc("output error (relative L2, worst output)")
            .y_label_formatter(&|y| format!("{y:.0e}"))
            .draw()
            .map_err(|e| fail(&e))?;
        for (kind, color) in [(SweepKind::Uniform, BLUE), (SweepKind::Allocated, RED)] {
            let mut points: Vec<(f64, f64)> = positive
                .iter()
                .filter(|r| r.kind == kind)
                .map(|r| (mb(r), r.rel_l2))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(|e| fail(&e))?
                .label(kind.label())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart
                .draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 4, color.filled())),
                )
                .map_err(|e| fail(&e))?;
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(|e| fail(&e))?;
        root.present().map_err(|e| fail(&e))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kind: SweepKind, setting: f64, bytes: usize, rel_l2: f64) -> SweepRow {
        SweepRow {
            kind,
            setting,
            bits_per_weight: setting,
            model_bytes: bytes,
            rel_l2,
            cosine: 1.0 - rel_l2 * rel_l2 / 2.0,
        }
    }

    #[test]
    fn csv_has_a_header_and_one_line_per_point() {
        let rows = vec![
            row(SweepKind::Uniform, 2.0, 1000, 0.5),
            row(SweepKind::Allocated, 2.5, 1200, 0.125),
        ];
        assert_eq!(
            csv(&rows),
            "kind,setting,bits_per_weight,model_bytes,rel_l2,cosine\n\
             uniform,2,2.0000,1000,5.000000e-1,0.875000\n\
             allocated,2.5,2.5000,1200,1.250000e-1,0.992188\n"
        );
        let svg = plot(&rows, "test").unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("allocated") && svg.contains("uniform"));
    }
}
