"""``report.md`` of a demo run: every section's metrics as tables and sentences, each target with
its status (met / NOT met), and the PNG grids embedded where they are discussed; with the image
stage (``run.py --image``), its bits/dim, samples and memory-saving run from ``<out>/image/``."""

from __future__ import annotations

import math

__all__ = ["render_report"]


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _status(value: float, target: float, above: bool = True) -> str:
    ok = value >= target if above else value <= target
    return "met" if ok else "NOT met"


def render_report(m: dict) -> str:
    """Markdown report of the metrics ``m`` of one run (the content of ``metrics.json``)."""
    e, iin, inv = m["experts"], m["iin"], m["invariances"]
    p, pk, pm = iin["probes"], iin["probes_knn"], iin["probes_mlp"]
    cap = e["classifier_on_ae_reconstructions_acc"]
    chance_colour = 1 / len(m["data"]["colours"])
    lines = [
        "# flowkern demo report", "",
        f"Mode: {'quick' if m['config']['quick'] else 'default'}; seed {m['config']['seed']}; "
        f"total {m['timings_s']['total']:.0f} s (stages: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in m["timings_s"].items() if k != "total") + ").", "",
        f"Data: ColorfulDigits, {m['data']['train']} train / {m['data']['test']} test images; "
        f"split: {m['data']['split']}; train augmentation: {m['data']['train_augmentation']}. "
        "All numbers below are on the test split.", "",
        "## Experts", "",
        "| quantity | value |", "|---|---|",
        *[f"| {k} | {v if 'mse' in k else _pct(v)} |" for k, v in e.items()], "",
        "The writer split limits digit accuracy: the classifier's own test accuracy bounds any digit judgement.", "",
        "## IIN (factors digit / colour / residual of the AE latent)", "",
        f"The IIN is fitted for {m['config']['iin_steps']} steps on pairs rendered afresh at every step (the pair's "
        "source digits with a new warp, brightness, background and shift, labels kept), encoded by the frozen AE and "
        f"standardised, plus Gaussian noise of std {m['config']['iin_noise']:g}: on the fixed training latents it "
        "overfits them and its factors generalise worse to the held-out writers.", "",
        f"Factor sizes used: {iin['sizes_used']}; pair-correlation estimate: "
        f"{m['factor_size_estimate_ae']['sizes']} (scores {m['factor_size_estimate_ae']['scores']}).", "",
        "Probes are independently trained classifiers, fitted on the train-split factors and scored on the test "
        "split, all on standardised inputs and identical for every factor: logistic regression (linear), a "
        "10-nearest-neighbour vote (kNN) and a one-hidden-layer MLP (256 ReLU units, Adam, early stopping on 10% "
        "of the train split, fixed seed). The MLP is the probe the targets are judged by; linear and kNN are "
        "shown for comparison.", "",
        "| factor | digit (linear) | colour (linear) | digit (kNN) | colour (kNN) | digit (MLP) | colour (MLP) |",
        "|---|---|---|---|---|---|---|",
        *[f"| {f} | {_pct(v['digit'])} | {_pct(v['colour'])} | {_pct(pk[f]['digit'])} | {_pct(pk[f]['colour'])} "
          f"| {_pct(pm[f]['digit'])} | {_pct(pm[f]['colour'])} |" for f, v in p.items()], "",
        "| target | MLP probe | status | linear probe | kNN probe |", "|---|---|---|---|---|",
        f"| digit probe on digit factor >= 95% | {_pct(pm['digit']['digit'])} | {_status(pm['digit']['digit'], .95)} "
        f"| {_pct(p['digit']['digit'])} | {_pct(pk['digit']['digit'])} |",
        f"| colour probe on colour factor >= 99% | {_pct(pm['colour']['colour'])} | "
        f"{_status(pm['colour']['colour'], .99)} | {_pct(p['colour']['colour'])} | {_pct(pk['colour']['colour'])} |",
        f"| colour from digit factor near chance ({_pct(chance_colour)}; met if <= chance + 10 points) "
        f"| {_pct(pm['digit']['colour'])} | {_status(pm['digit']['colour'], chance_colour + 0.1, above=False)} "
        f"| {_pct(p['digit']['colour'])} | {_pct(pk['digit']['colour'])} |",
        "", "| target (judged on decoded images) | value | status |", "|---|---|---|",
        *[f"| swap success ({f}) >= 90% | {_pct(v['success'])} | {_status(v['success'], .9)} |"
          for f, v in iin["swap"].items()], "",
        f"Upper bounds: the digit judge (the classifier) is {_pct(e['classifier_test_acc'])} accurate on real test "
        f"images and {_pct(cap)} on their AE reconstructions; every swap is decoded by the AE, so {_pct(cap)} caps "
        "the digit part of swap success. Digit probes on the raw AE latent reach "
        f"{_pct(e['digit_probe_on_ae_latent'])} (linear) / {_pct(e['digit_knn_probe_on_ae_latent'])} (kNN) / "
        f"{_pct(e['digit_mlp_probe_on_ae_latent'])} (MLP): the "
        "factors cannot hold more digit information than the latent they are an invertible function of, and the "
        "held-out writers bound digit accuracy from any representation of these 8x8 digits.", "",
        "Swap details (target attribute taken / other attribute kept): "
        + "; ".join(f"{f}: {_pct(v['target_attribute_taken'])} / {_pct(v['other_attribute_kept'])}"
                    for f, v in iin["swap"].items())
        + f". Round trip decode(encode(z)) max error {iin['roundtrip_max_abs_err']:.2e}.", "",
        "Colour swap (row: image, column: colour source):", "", "![colour swap](iin_swap_colour.png)", "",
        "Digit swap (row: image, column: digit source):", "", "![digit swap](iin_swap_digit.png)", "",
        "Colour interpolation (first/last column: the two images):", "", "![](iin_interp_colour.png)", "",
        "Digit interpolation:", "", "![](iin_interp_digit.png)", "",
        "## Sketch-defined concept", "",
        f"{m['sketch']['concept']}; pairs = two nuisance variations (colour, background, shift) of one example.",
        f"Thickness probe from the concept factor: {_pct(m['sketch']['thickness_probe_from_concept_factor'])}, "
        f"from the residual: {_pct(m['sketch']['thickness_probe_from_residual'])}.", "",
        "![examples](sketch_examples.png)", "",
        "Top: test images; bottom: their thickness factor replaced by the thick example's:", "",
        "![thickness swap](sketch_thickness_swap.png)", "",
        "## Invariances of the classifier", "",
        f"Samples of p(z_AE | classifier features): class retention {_pct(inv['class_retention'])}; "
        f"{inv['mean_distinct_colours_per_8_samples']:.2f} distinct colours per 8 samples of one representation "
        "(the classifier is largely colour-invariant).", "",
        "![invariances](invariance_samples.png)", "",
        f"First column: test image; then 8 decoded samples sharing its classifier representation. "
        f"Colour probe on the raw classifier features: {_pct(inv['colour_probe_on_classifier_features'])}. "
        f"Pair-correlation factor sizes of the classifier representation: "
        f"{m['factor_size_estimate_classifier']['sizes']} (scores {m['factor_size_estimate_classifier']['scores']}).",
        "", "IIN on the classifier representation:", "",
        "| factor | digit probe | colour probe |", "|---|---|---|",
        *[f"| {f} | {_pct(v['digit'])} | {_pct(v['colour'])} |" for f, v in inv["classifier_iin_probes"].items()],
        "", "## Net2Net", "",
        f"Classifier logits -> AE latent: generated images classified as the conditioning class "
        f"{_pct(m['net2net_logits']['class_conditional_acc'])}.", "",
        "![class samples](net2net_class_samples.png)", "",
    ]
    t = m["text"]
    if "skipped" in t:
        lines += [f"Text-to-image: {t['skipped']}.", ""]
    else:
        lines += [
            f"MiniLM sentence embedding -> AE latent, {t['samples']} samples from held-out templates "
            f"{t['held_out_templates']}: prompted digit {_pct(t['prompted_digit_acc'])} "
            f"({_status(t['prompted_digit_acc'], .9)} the 90% target), prompted colour "
            f"{_pct(t['prompted_colour_acc'])}, both {_pct(t['both_acc'])}.", "",
            "Rows: " + "; ".join(f"'{p}'" for p in t["picture_prompts"]) + ".", "",
            "![text to image](text_to_image.png)", ""]
    if "image" in m:
        lines += image_section(m["image"])
    return "\n".join(lines)


def image_section(im: dict) -> list[str]:
    """The image stage (``examples/image/glow_photos.py``): test bits/dim of normflows' Glow and its
    flowkern conversion, the samples, the memory-saving run on whole photographs."""
    gib, d = 2 ** 30, im["dir"]
    t, lg, c, tr = im["test_bpd"], im["large"], im["config"], im["train"]
    return [
        "## Glow on photographs (image flows)", "",
        f"`examples/image/glow_photos.py` ({im['size']} size; full report: [{d}/report.md]({d}/report.md)): "
        f"normflows' notebook Glow (L={c['levels']}, K={c['depth']}, hidden {c['hidden']}) and its "
        "`flowkern.compat.convert` conversion, the same initial weights, trained on the same "
        f"{c['steps']} batches of {c['batch']} {c['patch']}x{c['patch']} patches of scikit-learn's two sample photos; "
        f"test patches from a held-out region ({im['data']['n_test']}).", "",
        "| | test bits/dim | training s |", "|---|---|---|",
        f"| initial | {t['initial']:.4f} | |",
        f"| normflows | {t['normflows']:.4f} | {tr['normflows_seconds']:.1f} |",
        f"| flowkern | {t['flowkern']:.4f} | {tr['flowkern_seconds']:.1f} |", "",
        f"Difference {t['difference']:+.2e} bits/dim (test standard error {t['se_test']:.2e}; float32 rounding "
        f"alone: {t['rounding_reference_difference']:+.2e}): "
        f"{'agree within noise' if t['agree_within_noise'] else 'DO NOT agree within noise'}.", "",
        f"Samples (rows: {'; '.join(im['samples']['rows'])}):", "",
        f"![glow samples]({d}/{im['samples']['file']})", "",
        f"Memory-saving on {lg['shape'][1]}x{lg['shape'][2]} images, batch {lg['batch']}: bits/dim per step "
        + ", ".join(f"{b:.3f}" for b in lg["bits_per_dim_per_step"])
        + f" (loss {'fell' if lg['loss_fell'] else 'did NOT fall'}); saved for backward "
        f"{lg['flowkern_saved_bytes'] / 2 ** 20:.1f} MiB, process peak RSS {lg['process_peak_rss_bytes'] / gib:.2f} GiB; "
        f"normflows' step would need {lg['normflows_step_bytes_needed'] / gib:.1f} GiB of this machine's "
        f"{lg['machine_mem_total_bytes'] / gib:.1f} GiB "
        + ("(not affordable)." if not lg["normflows_affordable"] else
           f"(affordable at this batch, not from batch {lg.get('normflows_unaffordable_from_batch', '?')}; "
           "`make demo-image` trains a deeper model at a batch normflows cannot afford)."), "",
        f"![large sample]({d}/{lg['sample_file']})", ""]
