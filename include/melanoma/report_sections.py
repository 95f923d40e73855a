"""The run report's sections, each rendered from the run's artifacts as plain data.

Sections follow the model-card outline of Mitchell et al., "Model Cards for Model
Reporting" (FAT* 2019): model details, intended use, data, metrics, considerations.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from melanoma.images import ResolutionParity
from melanoma.report_html import (
    POINT_NAMES,
    confidence,
    escape,
    html_table,
    jpeg_thumbnail,
    number,
    operating_points_table,
    png_image,
    with_ci,
)
from melanoma.shifts import ACQUISITION_SHIFTS
from melanoma.splits import SPLITS
from melanoma.subgroups import ATTRIBUTES, SOURCE_SITES, UNKNOWN, group_order

# name (or key) -> PNG bytes, read and checked through the run's commit records
Figure = Callable[[str], bytes]


def data_section(dataset_version: str, dataset: dict, splits: dict, stats: dict) -> str:
    """The dataset version, its ingest rejects, the split and preprocessing's rejects."""
    counts = dataset["counts"]
    validation = dataset["validation"]
    dx_codes = sorted({dx for entry in splits["splits"].values() for dx in entry["by_dx"]})
    # splits_summary.json's keys come back sorted as strings: train, val, test again.
    names = [s for s in SPLITS if s in splits["splits"]] + sorted(
        set(splits["splits"]) - set(SPLITS)
    )
    rows = [
        [name, str(e["images"]), str(e["lesions"]), str(e["positives"])]
        + [str(e["by_dx"].get(dx, 0)) for dx in dx_codes]
        for name, e in ((n, splits["splits"][n]) for n in names)
    ]
    return f"""
<h2>Data</h2>
<p>HAM10000, dataset version <code>{escape(dataset_version)}</code> from
<code>{escape(dataset["source"])}</code>: {counts["images"]} images of {counts["lesions"]} lesions,
{counts["masks"]} lesion masks. Label task <code>{escape(splits["label_task"])}</code>;
{_split_rule(splits)}</p>
{html_table(["split", "images", "lesions", "positives", *dx_codes], rows)}
<p>Rejected or quarantined at ingest: {counts["rejected_rows"]} metadata rows,
{counts["quarantined"]} files; {len(validation["metadata_rows_without_image"])} metadata rows had no
image. Rejected at preprocessing: {stats["rejected"]}. Augmented training copies written:
{stats["augmented_copies"]} (used only by the <code>oversample</code> strategy).</p>
"""


def _split_rule(splits: dict) -> str:
    """How the split was made, in words: by lesion, or one source held out for test."""
    seed = splits["seed"]
    holdout = splits.get("holdout_source")
    if not holdout:
        ratios = ", ".join(str(r) for r in splits["ratios"])
        return (
            "split grouped by lesion (no lesion in two splits), stratified by diagnosis, "
            f"seed {seed}, ratios {ratios}."
        )
    train, val = splits["ratios"][:2]
    excluded = splits.get("excluded_images", 0)
    return (
        f"test split: the source <code>{escape(holdout)}</code> alone; the other sources split "
        "into train and validation grouped by lesion (no lesion in two splits), stratified by "
        f"diagnosis, seed {seed}, train:validation {train}:{val}; {excluded} images of lesions "
        "that also have images in the held-out source are in no split."
    )


def phase2_epochs_run(training: dict, history: dict) -> int:
    """Phase-2 epochs the run trained: none when it configured none (its unfreezing then
    changed nothing), else the epochs its history recorded (its timing, for a history
    without per-epoch entries)."""
    if not training["config"].get("phase2_epochs"):
        return 0
    logged = max(
        (len(v) for v in history.get("phase2", {}).values() if isinstance(v, list)), default=0
    )
    timed = history.get("summary", {}).get("timing", {}).get("phase2", {})
    return logged or int(timed.get("epochs", 0))


def _phase2(config: dict, summary: dict, epochs_run: int) -> str:
    """Phase 2's settings, only where it ran: a setting that never applied is not the model's."""
    if not epochs_run:
        configured = config["phase2_epochs"]
        why = "0 epochs configured" if not configured else f"none of {configured} epochs ran"
        return f"not run ({why}): the backbone was not fine-tuned"
    schedule = config.get("phase2_schedule", "constant")
    unfrozen = ", ".join(summary.get("unfrozen_blocks", [])) or "none"
    return (
        f"{epochs_run} epoch{'' if epochs_run == 1 else 's'} run of {config['phase2_epochs']} "
        f"at most, lr {config['phase2_learning_rate']}, schedule {escape(schedule)}, "
        f"unfrozen: {escape(unfrozen)}"
    )


def _validation_auroc(config: dict, history: dict, epochs_run: int) -> str:
    summary = history.get("summary", {})
    text = (
        f"{number(summary.get('val_auroc_after_phase1'), 4)} after phase 1, "
        f"{number(summary.get('val_auroc_final'), 4)} final"
    )
    views = config.get("tta_views", 1)
    if views > 1:
        # Training monitors the images as they are; the final score averages the views.
        text += f" (final with {views} test-time views, phase 1 without)"
    if not epochs_run:
        text += " (phase 2 did not run)"
    elif history.get("phase2", {}).get("best_epoch") == -1:
        text += " (phase 2 never beat phase 1: phase 1's weights were kept)"
    return text


def model_section(training: dict, history: dict, preprocessing: dict) -> str:
    config = training["config"]
    summary = history.get("summary", {})
    timing = summary.get("timing", {})
    epochs_run = phase2_epochs_run(training, history)
    rows = [
        ["Backbone", escape(config["backbone"])],
        [
            "Pretrained weights",
            escape(training.get("weights_key") or "none (random initialisation)"),
        ],
        [
            "Input",
            f"{preprocessing['size']}&times;{preprocessing.get('width') or preprocessing['size']}"
            " (height &times; width) RGB, uint8",
        ],
        [
            "Preprocessing",
            escape(
                f"interpolation {preprocessing['interpolation']}, "
                f"hair removal {preprocessing['hair_removal']}, lesion crop {preprocessing['lesion_crop']}, "
                f"colour constancy {preprocessing.get('color_constancy', False)}"
            ),
        ],
        ["Head and scoring", escape(_head_and_scoring(config, summary))],
        [
            "Phase 1 (backbone frozen)",
            f"{config['phase1_epochs']} epochs max, lr {config['phase1_learning_rate']}, "
            f"cached features: {training['feature_cache']}",
        ],
        ["Phase 2 (fine-tuning)", _phase2(config, summary, epochs_run)],
        [
            "Class imbalance",
            escape(config["imbalance"])
            + (
                f" (class weights {_class_weights(training['class_weight'])})"
                if training.get("class_weight")
                else ""
            ),
        ],
        ["Training images", f"{training['train_images']} ({training['train_positives']} positive)"],
        ["Validation AUROC", _validation_auroc(config, history, epochs_run)],
        [
            "Device",
            escape(
                f"{', '.join(training['device']['devices'])}, {training['device']['precision']}"
            ),
        ],
        ["Timing", escape(_timing(timing))],
    ]
    body = "".join(f"<tr><th>{k}</th><td class='text'>{v}</td></tr>" for k, v in rows)
    return f"<h2>Model details</h2><table>{body}</table>"


def _head_and_scoring(config: dict, summary: dict) -> str:
    """The model levers in words (a run from before them: last-layer features, binary head,
    one view, no metadata)."""
    depth = "mid-level" if config.get("feature_depth") == "mid" else "last-layer"
    parts = [
        f"{depth} features" + (", multiscale" if config.get("multiscale_features") else ""),
        f"{config.get('head', 'binary')} head",
        f"test-time views {config.get('tta_views', 1)}",
    ]
    if config.get("metadata_fusion"):
        fusion = f"metadata fusion (age, sex, body site; dropout {config['metadata_dropout']})"
        without = summary.get("val_auroc_without_metadata")
        if without is not None:
            fusion += f", validation AUROC without metadata {without:.4f}"
        parts.append(fusion)
    else:
        parts.append("no metadata")
    if config.get("label_smoothing"):
        parts.append(f"label smoothing {config['label_smoothing']}")
    return "; ".join(parts)


def _class_weights(weights: dict) -> str:
    return ", ".join(f"{k}: {float(v):.3g}" for k, v in sorted(weights.items()))


def _timing(timing: dict) -> str:
    """Training wall times in words, from history.json's summary."""
    parts = []
    one, two = timing.get("phase1", {}), timing.get("phase2", {})
    if one.get("resumed"):
        parts.append("phase 1 resumed from its checkpoint")
    elif "seconds" in one:
        text = f"phase 1 {one['seconds']:.0f} s"
        if one.get("cached_features"):
            text += (
                f" (features {one['feature_seconds']:.0f} s at "
                f"{one['feature_images_per_second']} images/s, head {one['head_seconds']:.0f} s)"
            )
        parts.append(text)
    if "seconds" in two:
        parts.append(
            f"phase 2 {two['seconds']:.0f} s, {two['epochs']} epochs, "
            f"{two['images_per_second']} images/s"
        )
    return "; ".join(parts) or "not recorded"


def calibration_section(calibration: dict) -> str:
    rows = []
    for name, entry in calibration["thresholds"].items():
        v = entry["validation"]
        rows.append(
            [
                POINT_NAMES.get(name, name),
                f"{entry['threshold']:.4f}",
                escape(entry["rule"]),
                number(v["sensitivity"]),
                number(v["specificity"]),
                number(v["ppv"]),
            ]
        )
    method = calibration["probability_calibration"]["method"]
    return f"""
<h2>Thresholds (chosen on validation)</h2>
<p>Every threshold was chosen on the validation split ({calibration["validation"]["images"]} images,
{calibration["validation"]["positives"]} positive); the test split was not used. Probability
calibration: <code>{escape(method)}</code>, fitted on validation.</p>
{html_table(["threshold", "value", "rule", "val. sensitivity", "val. specificity", "val. PPV"], rows)}
"""


def metrics_section(metrics: dict, figure: Figure) -> str:
    """Test metrics with intervals, and the evaluation's figures (``figure(name)``: PNG)."""
    counts = metrics["counts"]
    free = metrics["threshold_free"]
    boot = metrics["bootstrap"]
    probability = metrics["probability_calibration"]
    calibration_rows = [
        [name, number(entry["brier"], 4), number(entry["ece"], 4)]
        for name, entry in probability["test"].items()
    ]
    return f"""
<h2>Test metrics</h2>
<p>Test split: {counts["images"]} images of {counts["lesions"]} lesions, {
        counts["positives"]
    } positive
(prevalence {counts["prevalence"]:.3f}). Intervals: {confidence(metrics)} percentile
bootstrap over lesions ({boot["replicates"]} replicates, seed {boot["seed"]},
{boot["degenerate_replicates"]} single-class replicates left out).</p>
{
        html_table(
            ["", f"value ({confidence(metrics)} CI)"],
            [
                ["AUROC", with_ci(free["auroc"])],
                ["AUPRC", with_ci(free["auprc"])],
                ["AUPRC of a random classifier (prevalence)", number(free["auprc_baseline"])],
            ],
        )
    }
{operating_points_table(metrics)}
<h3>Probability calibration on test ({escape(probability["method"])}, fitted on validation)</h3>
{html_table(["probabilities", "Brier score", "ECE"], calibration_rows)}
<h2>Figures</h2>
<div class="figures">
{png_image(figure("roc"), "ROC curve")}{
        png_image(figure("precision_recall"), "Precision-recall curve")
    }
</div>
<div class="figures wide">{png_image(figure("confusion_matrices"), "Confusion matrices")}</div>
<div class="figures">
{png_image(figure("metrics_vs_threshold"), "Metrics against threshold")}{
        png_image(figure("reliability"), "Reliability diagram")
    }
</div>
<h3>Training curves</h3>
<div class="figures wide">{png_image(figure("training_curves"), "Training curves")}</div>
"""


def _mix(mix: dict[str, float] | None) -> str:
    return ", ".join(f"{dx} {share:.1%}" for dx, share in mix.items()) if mix else "n/a"


def _spread(spread: dict[str, float] | None) -> str:
    return (
        f"{spread['min']:.0f}&ndash;{spread['median']:.0f}&ndash;{spread['max']:.0f}"
        if spread
        else "n/a"
    )


def external_section(
    sets: list[tuple[dict, Figure]], test_metrics: dict, test_formats: dict[str, int]
) -> str:
    """One subsection per external set: its metrics.json and its figures; ``test_formats``:
    images per file format in the run's test split (empty: not recorded)."""
    if not sets:
        return ""
    reference_formats = (
        ", ".join(f"{k} {v}" for k, v in test_formats.items()) if test_formats else "not recorded"
    )
    parts = [
        "<h2>External validation</h2><p>The run's model on labelled sets from outside "
        "HAM10000, at the thresholds it chose on its own validation split.</p>"
    ]
    parts += [
        _external_set_subsection(m, figure, test_metrics, reference_formats) for m, figure in sets
    ]
    return "\n".join(parts)


def _external_set_subsection(
    m: dict, figure: Figure, test_metrics: dict, reference_formats: str
) -> str:
    """One external set: its counts, metrics beside the test split's, and its figures."""
    counts, free = m["counts"], m["threshold_free"]
    test_free = test_metrics["threshold_free"]
    metrics_table = html_table(
        ["", f"external ({confidence(m)} CI)", f"HAM10000 test ({confidence(test_metrics)} CI)"],
        [
            ["AUROC", with_ci(free["auroc"]), with_ci(test_free["auroc"])],
            ["AUPRC", with_ci(free["auprc"]), with_ci(test_free["auprc"])],
        ],
    )
    not_scored = ", ".join(f"{k}: {v}" for k, v in m["not_scored"].items()) or "none"
    return f"""<h3>{escape(m["external_set"])}</h3>
<p>{counts["images"]} images ({counts["positives"]} positive for
<code>{escape(m["label_task"])}</code>), labels in the {escape(m["labels_format"])} format.
Not scored: {escape(not_scored)}.
{_resolution_parity(m)}</p>
{metrics_table}
{operating_points_table(m)}
<h4>How the set differs from the HAM10000 test split</h4>
{_differences_table(m["differences"], reference_formats)}
<div class="figures">{png_image(figure("roc"), "External ROC curve")}{
        png_image(figure("precision_recall"), "External precision-recall curve")
    }</div>
<div class="figures wide">{
        png_image(figure("confusion_matrices"), "External confusion matrices")
    }</div>"""


def _differences_table(d: dict, reference_formats: str) -> str:
    """An external set beside the test split: prevalence, diagnoses, sizes, formats."""
    return html_table(
        ["", "external set", "HAM10000 test split"],
        [
            ["prevalence", number(d["prevalence"]), number(d["reference_prevalence"])],
            ["diagnoses", escape(_mix(d["dx_mix"])), escape(_mix(d["reference_dx_mix"]))],
            [
                "width, height (min&ndash;median&ndash;max px)",
                f"{_spread(d['width'])}, {_spread(d['height'])}",
                f"{_spread(d['reference_width'])}, {_spread(d['reference_height'])}",
            ],
            [
                "formats",
                escape(", ".join(f"{k} {v}" for k, v in d["formats"].items())),
                escape(reference_formats),
            ],
        ],
    )


def promotion_section(promotion: dict | None) -> str:
    if promotion is None:
        return "<h2>Promotion</h2><p>No promotion decision was recorded for this run.</p>"
    promoted = promotion["promote"]
    reasons = "".join(f"<li>{escape(r)}</li>" for r in promotion["reasons"])
    verdict = "Promoted to champion" if promoted else "Not promoted: the champion was kept"
    policy = promotion["policy"]
    benchmark = promotion["candidate"].get("benchmark_auroc")
    comparison = promotion.get("comparison") or {}
    rows = []
    if benchmark:
        rows.append(("this run", benchmark))
    if "difference" in comparison:
        champion = promotion["champion"]["run_id"]
        rows.append((f"champion {champion}", {"value": comparison["champion_auroc"]}))
        rows.append(("paired difference, this run minus the champion", comparison["difference"]))
    table = (
        html_table(
            ["AUROC on the promotion benchmark", "value (lesion-bootstrap interval)"],
            [
                [escape(name), with_ci(ci, 4) if "ci_low" in ci else number(ci["value"], 4)]
                for name, ci in rows
            ],
        )
        if rows
        else ""
    )
    return f"""
<h2>Promotion</h2>
<div class="decision {"promoted" if promoted else "kept"}">{verdict}</div>
<ul>{reasons}</ul>
{table}
<p class="ci">Rule: test sensitivity at the {escape(policy["operating_point"])} threshold at least
{policy["sensitivity_floor"]}, and AUROC on the promotion benchmark not below the champion's by
more than {policy["auroc_margin"]}. The promotion benchmark is a fixed share of the dataset
version's lesions that no run trains, validates, calibrates or tests on; both models score its
stored images, each through its own preprocessing, as <code>melanoma-predict</code> does.</p>
"""


def shift_order(name: str) -> int:
    """A shift's place in tables: ``ACQUISITION_SHIFTS``' order (JSON keeps keys sorted)."""
    names = list(ACQUISITION_SHIFTS)
    return names.index(name) if name in names else len(names)


def ood_section(summary: dict, external_sets: list[dict]) -> str:
    """The out-of-distribution detector: its threshold, and the share it flags on test and
    on each external set (a run trained before it: not shown)."""
    ood = summary.get("ood")
    if not ood:
        return ""
    rows = [["test split", _share(ood.get("test_flagged_share"))]]
    rows += [
        [f"external: {m['external_set']}", _share(m.get("ood_flagged_share"))]
        for m in external_sets
    ]
    return f"""<h2>Images not of the model's kind</h2>
<p>Each image's Mahalanobis distance from its pooled features to the nearest class of the
training images (class means and a shared Ledoit-Wolf covariance; Lee et al., NeurIPS
2018). Above {ood["threshold"]:.4g} an image is flagged as out of distribution: 95% of
validation images pass by construction. <code>melanoma-predict</code> and external
validation write each image's <code>ood_distance</code> and <code>in_distribution</code>;
a flagged image's probability means little.</p>
{html_table(["Images", "Flagged out of distribution"], rows)}"""


def _share(value: float | None) -> str:
    return "not measured" if value is None else f"{100 * value:.1f}%"


def robustness_section(robustness: dict | None) -> str:
    """The model under acquisition shift (``evaluation/robustness.json``), or why it is absent."""
    if robustness is None:
        return (
            "<h2>Robustness to acquisition shift</h2><p>Not measured for this run "
            "(<code>robustness_images</code> 0, or a run from before the section).</p>"
        )
    strengths = [f"{s:g}" for s in robustness["config"]["strengths"]]
    rows = [
        [
            escape(name.replace("_", " ")),
            *(
                f"{with_ci(shift['strengths'][s]['auroc'])}<br>"
                f"<span class='ci'>change {number(shift['strengths'][s]['change']['value'])}</span>"
                for s in strengths
            ),
            number(shift["mean_auroc"]),
        ]
        for name, shift in sorted(
            robustness["shifts"].items(), key=lambda item: shift_order(item[0])
        )
    ]
    clean = robustness["clean_auroc"]
    ratio = robustness["ratio_to_clean"]
    parity = ResolutionParity.from_record(robustness["resolution_parity"])
    return f"""
<h2>Robustness to acquisition shift</h2>
<p>{robustness["images"]} test images ({robustness["lesions"]} lesions, {robustness["positives"]}
positive), read as stored and re-rendered as other dermoscopes, settings and files would give
them, each shift at strengths {", ".join(strengths)} (0 is the image unchanged, 1 the
strongest graded). Each image is then scored as <code>melanoma-predict</code> would score such
a file. {parity.describe()}
AUROC on the clean images, scored the same way: {with_ci(clean)}. Mean under shift:
<b>{number(robustness["mean_auroc"])}</b>{
        f", {number(ratio)} of clean" if ratio is not None else ""
    }. The change is the paired difference from the clean images.</p>
{html_table(["shift", *(f"strength {s}" for s in strengths), "mean"], rows)}
<p class="ci">A yardstick in the spirit of ImageNet-C (Hendrycks and Dietterich, ICLR 2019):
the shifts are synthetic, so a drop here says the model is sensitive to that change of
acquisition, not how it will do on another clinic's images.</p>
"""


def gradcam_section(summary: dict | None, index: pd.DataFrame | None, image: Figure) -> str:
    """The attention summary and a gallery of the explained images (``image(png key)``)."""
    if summary is None:
        return "<h2>Explanations (Grad-CAM)</h2><p>No Grad-CAM was computed for this run.</p>"
    rows = [_attention_row(o, summary["by_outcome"][o]) for o in ("TP", "FP", "FN", "TN")]
    rows.append(_attention_row("all explained", summary["overall"]))
    attention_table = html_table(
        [
            "outcome",
            "images",
            "all-zero maps",
            "energy in lesion (mean)",
            "(median)",
            "lesion area share (mean)",
            "background/lesion ratio (median)",
        ],
        rows,
    )
    method = (
        "Grad-CAM++ (Chattopadhay et al., WACV 2018)"
        if summary["method"] == "gradcam++"
        else "Grad-CAM (Selvaraju et al., ICCV 2017)"
    )
    sources = ", ".join(f"{v} {escape(k)}" for k, v in summary["mask_sources"].items())
    automatic = (
        " (automatic = Otsu segmentation where HAM10000 has no official mask)"
        if "automatic" in summary["mask_sources"]
        else ""
    )
    return f"""
<h2>Explanations (Grad-CAM)</h2>
<p>{method} for the melanoma score at layer
<code>{
        escape(summary["layer"])
    }</code>, on the most confident true and false positives and negatives
at the {escape(summary["operating_point"])} threshold ({
        summary["threshold"]:.4f}) and a seeded random
sample of the test split. <b>Energy in lesion</b>: the share of the heat map inside the lesion
mask; a map spread evenly over the image would score the lesion's area share, so compare the two.
<b>Background-to-lesion ratio</b>: mean activation outside the mask over mean activation inside
(Tschandl et al., Nature Medicine 2020); below 1, the model looks more at the lesion.
<b>All-zero maps</b>: nothing in the image raised the melanoma score (common for confident
negatives); they have no share and are left out of the means. Masks:
{sources}{automatic}.</p>
{attention_table}
<p>Energy in lesion over lesion area, all explained images: {
        number(summary["overall"]["energy_to_area"], 2)
    }
(1 means no preference for the lesion).</p>
<p class="ci">Each pair: the stored image with the lesion outline, and the heat map over it (red = high).</p>
<div class="gallery">{"".join(_gallery_figures(index, image))}</div>
"""


def _attention_row(name: str, entry: dict) -> list[str]:
    """One outcome's attention figures, as a table row."""
    return [
        name,
        str(entry["images"]),
        str(entry["maps_without_positive_evidence"]),
        number(entry["energy_in_lesion"]["mean"]),
        number(entry["energy_in_lesion"]["median"]),
        number(entry["lesion_area_fraction"]["mean"]),
        number(entry["background_to_lesion_ratio"]["median"]),
    ]


def _gallery_figures(index: pd.DataFrame | None, image: Figure) -> list[str]:
    """A captioned figure per explained image, by selection (TP, FP, FN, TN, random)."""
    figures = []
    explained = index if index is not None else pd.DataFrame(columns=["selected_as"])
    for selected_as in ("TP", "FP", "FN", "TN", "random"):
        for r in explained[explained["selected_as"] == selected_as].itertuples():
            attention = (
                "all-zero map, "
                if np.isnan(r.energy_in_lesion)
                else f"energy in lesion {r.energy_in_lesion:.2f} "
                f"(lesion {r.lesion_area_fraction:.2f} of the image), "
            )
            figures.append(
                f"<figure>{jpeg_thumbnail(image(r.png), r.image_id)}<figcaption>"
                f"{escape(selected_as)}: {escape(r.image_id)} ({escape(r.dx)}), "
                f"p={r.probability:.3f}, outcome {escape(r.outcome)}, {attention}"
                f"{escape(r.mask_source)} mask</figcaption></figure>"
            )
    return figures


def _resolution_parity(external_metrics: dict) -> str:
    """How the set's images were sized before the model's resize (its metrics say)."""
    return ResolutionParity.from_record(external_metrics.get("resolution_parity")).describe()


def considerations_section(
    metrics: dict, sources: dict[str, int] | None, external_sets: list[str]
) -> str:
    """Intended use and limitations; ``sources``: images per source (HAM10000's ``dataset``
    column) in the run's split, None for a split without it; ``external_sets``: the names
    of the external sets the run was validated on."""
    return f"""
<h2>Intended use</h2>
<p><b>Research use only; not a diagnostic device.</b> For dermatology-AI researchers studying
melanoma classification on dermoscopy images: comparing training recipes, thresholds and
explanations on a reproducible, lesion-grouped split. Out of scope: diagnosing, treating or
triaging any patient; use on clinical (non-dermoscopic) photographs; use on populations or
devices unlike HAM10000's without external validation.</p>
<h2>Limitations and considerations</h2>
<ul>
<li>{_sources_limitation(sources)}</li>
<li>{_test_set_limitation(metrics.get("holdout_source"), external_sets)}</li>
<li>Patients are not identified in HAM10000: the split keeps each lesion's images together, but
one patient's different lesions may fall in different splits.</li>
<li>PPV and NPV depend on prevalence ({metrics["counts"]["prevalence"]:.3f} here); they will
differ where melanoma is rarer or commoner.</li>
<li>Thresholds were chosen on the validation split; a new population needs its own.</li>
<li>Histopathology confirms only part of HAM10000's diagnoses (the others by follow-up, expert
consensus or confocal microscopy).</li>
</ul>
"""


def _sources_limitation(sources: dict[str, int] | None) -> str:
    """What the run's images come from, counted from its split, never a fixed number."""
    caveat = (
        "HAM10000's patients are mostly fair-skinned; performance on darker skin types and "
        "on other clinics and cameras is unknown."
    )
    if not sources or set(sources) == {UNKNOWN}:  # no source recorded for any image
        return (
            "One archive: every image is HAM10000's, but this run's split does not record "
            f"each image's source (clinic and device). {caveat}"
        )
    named = [s for s in sources if s != UNKNOWN]
    n = len(named)
    listed = ", ".join(
        f"<code>{escape(s)}</code> {sources[s]}"
        for s in [*named, *([UNKNOWN] if UNKNOWN in sources else [])]
    )
    text = (
        f"One archive, {n} source{'' if n == 1 else 's'}: this run's images are HAM10000's "
        f"(sources as its <code>dataset</code> column names them, with their images: {listed})"
    )
    sites = sorted({SOURCE_SITES[s] for s in named if s in SOURCE_SITES})
    unsited = [s for s in named if s not in SOURCE_SITES]
    if sites and not unsited:
        text += (
            f", collected at {len(sites)} site{'' if len(sites) == 1 else 's'} ({', '.join(sites)})"
        )
    elif unsited:
        text += f"; the site of {', '.join(escape(s) for s in unsited)} is not recorded here"
    return f"{text}. {caveat}"


def _test_set_limitation(holdout: str | None, external_sets: list[str]) -> str:
    """What the test split estimates, and which external sets (if any) the run was scored on."""
    if holdout:
        text = (
            f"The test split is the source <code>{escape(holdout)}</code> alone, held out of "
            "training and validation: it estimates performance at a HAM10000 clinic and device "
            "the model never saw, and on nothing outside HAM10000."
        )
    else:
        text = (
            "The test split comes from the same archive as the training data; it estimates "
            "performance on HAM10000-like images only."
        )
    if not external_sets:
        return text + " No external test set was used for this report."
    names = ", ".join(f"<code>{escape(n)}</code>" for n in external_sets)
    plural = "s" if len(external_sets) > 1 else ""
    return f"{text} External test set{plural} used: {names} (see External validation below)."


def source_summary(metrics: dict) -> str:
    """The summary's sentence on the sources: within-source and source-only AUROC."""
    confounding = metrics.get("source_confounding")
    text = ""
    if metrics.get("holdout_source"):
        text += f" Unseen clinic: tested on <code>{escape(metrics['holdout_source'])}</code> alone."
    if confounding:
        text += (
            f" Within a source: {with_ci(confounding['within_source_auroc'])}; "
            f"the source alone: {with_ci(confounding['source_only_auroc'])}."
        )
    return text


def subgroups_section(metrics: dict) -> str:
    """What the source alone explains, and AUROC per source, sex, age band and body site."""
    confounding, subgroups = metrics.get("source_confounding"), metrics.get("subgroups")
    if not subgroups:
        return """
<h2>Within source and per subgroup</h2>
<p>This run's split carries no metadata (it predates them): no subgroup metrics.</p>
"""
    parts = ["<h2>Within source and per subgroup</h2>"]
    holdout = metrics.get("holdout_source")
    if holdout:
        parts.append(
            f"<p><b>Unseen clinic.</b> This run trained and validated without the source "
            f"<code>{escape(holdout)}</code> and tested on it alone: its test metrics are an "
            "estimate for a clinic and device the model never saw.</p>"
        )
    if confounding:
        parts.append(_confounding_paragraph(metrics, confounding))
    # metrics.json's keys come back sorted as strings: put them in reading order again.
    attributes = [a for a in ATTRIBUTES if a in subgroups] + sorted(
        set(subgroups) - set(ATTRIBUTES)
    )
    parts += [_subgroup_table(metrics, a, subgroups[a]) for a in attributes]
    return "\n".join(parts)


def _confounding_paragraph(metrics: dict, confounding: dict) -> str:
    """AUROC over all pairs, within a source, and of the source alone."""
    rates = ", ".join(f"{escape(k)} {v:.3f}" for k, v in sorted(confounding["train_rates"].items()))
    table = html_table(
        ["", f"value ({confidence(metrics)} CI)"],
        [
            ["AUROC, all pairs", with_ci(metrics["threshold_free"]["auroc"])],
            ["AUROC, pairs within a source", with_ci(confounding["within_source_auroc"])],
            ["AUROC of the source alone", with_ci(confounding["source_only_auroc"])],
        ],
    )
    return f"""<p>HAM10000 pools sources (clinics and devices) whose positive rates differ
(training split: {rates}). A model can rank well overall by telling the sources apart. The
within-source AUROC counts only positive/negative pairs from the same source; the source-only
AUROC scores each test image by its source's training rate and nothing else.</p>
{table}"""


def _subgroup_table(metrics: dict, attribute: str, groups: dict) -> str:
    """AUROC per group of one attribute (source, sex, age band, body site)."""
    rows = [
        [
            escape(name),
            str(entry["images"]),
            str(entry["lesions"]),
            str(entry["positives"]),
            with_ci(entry["auroc"]) if entry["auroc"] else "n/a",
            escape(entry["note"]),
        ]
        for name, entry in ((n, groups[n]) for n in group_order(attribute, groups))
    ]
    header = [
        "group",
        "images",
        "lesions",
        "positives",
        f"AUROC ({confidence(metrics)} CI)",
        "note",
    ]
    return f"<h3>By {escape(attribute)}</h3>" + html_table(header, rows)
