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
    """The image stage (``examples/image/glow_photos.py``): the ``flowkern train`` run's val
    bits/dim and samples, the measured peak memory of the standard and the memory-saving mode, and
    normflows' notebook Glow against its conversion."""
    gib, d = 2 ** 30, im["dir"]
    c, data, tr, mem, nf = im["config"], im["data"], im["train"], im["memory"], im["normflows"]
    (s0, s1), (m0, mr) = mem["standard"], mem["memory_saving"]
    side = mem["shape"][1]
    same = [r for r in (s1, s0) if r["batch"] == mr["batch"]]
    versus = (f"the standard mode {same[0]['peak_rss_bytes'] / gib:.2f} GiB at the same batch"
              if same else f"the standard mode would need {mem['standard_peak_needed_at_run_batch'] / gib:.1f} GiB")
    return [
        "## Glow on photographs, trained by `flowkern train`", "",
        f"`examples/image/glow_photos.py` ({im['size']} size; full report: [{d}/report.md]({d}/report.md)). "
        "An image folder written at run time from the photographs bundled in scikit-image and scikit-learn "
        f"({data['train_files']} training tiles, {data['val_files']} held-out validation crops, the photo as the "
        "class), "
        f"trained by `{tr['command']}`:", "",
        f"- val bits/dim after {tr['steps']} steps: **{tr['val_bits_per_dim']:.4f}** ({tr['val_images']} crops; train "
        f"{tr['train_bits_per_dim_first']:.3f} at the first step, {tr['train_bits_per_dim_last10']:.3f} over the last "
        f"10), {tr['seconds']:.0f} s;",
        f"- {side}x{side} crops, peak RSS per `flowkern train` process: standard "
        f"{s0['peak_rss_bytes'] / gib:.2f} GiB at batch {s0['batch']}, "
        f"{s1['peak_rss_bytes'] / gib:.2f} GiB at batch {s1['batch']} "
        f"(+{mem['standard_bytes_per_image'] / 2 ** 20:.0f} MiB per image: more than this machine's "
        f"{mem['machine_mem_total_bytes'] / gib:.1f} GiB from batch {mem['standard_unaffordable_from_batch']}); "
        f"memory-saving (chunk 1) {m0['peak_rss_bytes'] / gib:.2f} GiB at batch {m0['batch']}, "
        f"{mr['peak_rss_bytes'] / gib:.2f} GiB at batch {mr['batch']} ({versus})"
        + ("" if not mem["standard_affordable_at_run_batch"] else
           "; `make demo-image` trains the memory-saving mode at the batch the standard mode cannot afford") + ";",
        f"- normflows' notebook Glow and its `flowkern.compat.convert` conversion, {nf['steps']} steps from the same "
        f"weights on the same batches: test bits/dim {nf['normflows']:.4f} and {nf['flowkern']:.4f} (difference "
        f"{nf['difference']:+.1e}, test standard error {nf['se_test']:.1e}"
        + ("" if nf["rounding_reference_difference"] is None else
           f", float32 rounding alone {nf['rounding_reference_difference']:+.1e}") + "): "
        f"{'agree within noise' if nf['agree_within_noise'] else 'DO NOT agree within noise'}.", "",
        "Samples at temperature 0.7 (the classes in turn):", "",
        f"![glow samples]({d}/{tr['samples_file']})", ""]
