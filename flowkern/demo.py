"""``flowkern demo``: train the experts, IIN, the invariance cINN and Net2Net translators on
ColorfulDigits; write PNG grids, ``metrics.json`` and ``report.md`` to ``--out``.

Every number is measured on the held-out writer blocks (test split) with judges trained
independently of the flows: digit = the classifier expert on images, colour = a logistic
regression on pooled image colours; factor probes (logistic regression, 10-NN, MLP) are fitted on train
factors.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["DemoConfig", "add_arguments", "run"]


@dataclass(frozen=True)
class DemoConfig:
    """Training budget of one demo run (``--quick`` shrinks every stage)."""

    latent_dim: int = 32
    ae_width: int = 64
    ae_epochs: int = 30
    clf_epochs: int = 20
    train_copies: int = 8
    deform: float = 1.5  # copies 2..n of each training digit get a random small affine warp
    iin_steps: int = 4000
    iin_blocks: int = 6
    iin_lr: float = 2e-3
    iin_noise: float = 0.2  # std of the noise added to the standardised latents / features while fitting an IIN
    sketch_steps: int = 400
    inv_steps: int = 900
    rep_iin_steps: int = 400
    n2n_steps: int = 1200
    text_steps: int = 1500
    batch: int = 128
    n_blocks: int = 4
    hidden: int = 128
    digit_size: int = 16
    colour_size: int = 4
    digit_pair_weight: float = 1.5  # IIN pairs share the digit with prob w/(w+1), else the colour
    temperature: float = 0.8


QUICK = DemoConfig(ae_width=32, ae_epochs=8, clf_epochs=8, train_copies=4, iin_steps=250, iin_blocks=4, iin_lr=2e-3,
                   sketch_steps=60, inv_steps=150, rep_iin_steps=60, n2n_steps=150, text_steps=300, batch=128)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="run directory (default runs/demo)")
    parser.add_argument("--quick", action="store_true", help="small budget (about 2 minutes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: the small nets are slower with more)")
    parser.add_argument("--no-text", action="store_true", help="skip the MiniLM text-to-image experiment")
    parser.add_argument("--default-heap", action="store_true",
                        help="leave glibc's malloc settings alone (default: flowkern.heap.keep_freed_memory(), "
                             "which keeps freed training memory for the next step instead of re-faulting it)")


# ---- helpers ----------------------------------------------------------------------------
def _probe_acc(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
               kind: str = "linear") -> float:
    """Test accuracy of a probe fitted on the train split (standardised inputs): ``linear`` = logistic
    regression, ``knn`` = 10-nearest-neighbour vote, ``mlp`` = one-hidden-layer (256 ReLU) network (Adam,
    early stopping on 10% of the train split, fixed seed); each is applied identically to every factor."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    heads = {"linear": lambda: LogisticRegression(max_iter=2000), "knn": lambda: KNeighborsClassifier(10),
             "mlp": lambda: MLPClassifier((256,), alpha=1e-3, early_stopping=True, max_iter=200, random_state=0)}
    if kind not in heads:
        raise ValueError(f"kind must be one of {tuple(heads)}, got {kind!r}")
    probe = make_pipeline(StandardScaler(), heads[kind]())
    probe.fit(train_x.detach().numpy(), train_y.numpy())
    return float(probe.score(test_x.detach().numpy(), test_y.numpy()))


class ColourJudge:
    """Logistic regression on 4x4-average-pooled RGB images: predicts the colour of an image."""

    def __init__(self, images: torch.Tensor, colours: torch.Tensor) -> None:
        from sklearn.linear_model import LogisticRegression

        self.model = LogisticRegression(max_iter=2000).fit(self._feat(images), colours.numpy())

    @staticmethod
    def _feat(images: torch.Tensor) -> np.ndarray:
        return F.adaptive_avg_pool2d(images.detach(), 4).flatten(1).numpy()

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.model.predict(self._feat(images)))


class Stage:
    """Context manager recording wall time of a named stage into ``timings``."""

    def __init__(self, timings: dict[str, float], name: str) -> None:
        self.timings, self.name = timings, name

    def __enter__(self) -> Stage:
        self.t0 = time.perf_counter()
        print(f"[demo] {self.name} ...", flush=True)
        return self

    def __exit__(self, *exc) -> None:
        self.timings[self.name] = round(time.perf_counter() - self.t0, 2)


def _r(x: float) -> float:
    return round(float(x), 4)


# ---- the job ----------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    """Run the demo with torch and the BLAS/OpenMP pools of numpy/sklearn limited to ``--threads``
    (oversubscribed BLAS pools made the sklearn probes 5x slower on 2 cores), and glibc's heap set
    to keep freed memory unless ``--default-heap`` (the quick run: 8% faster, 26% fewer page
    faults, identical metrics)."""
    from threadpoolctl import threadpool_limits

    from .heap import keep_freed_memory

    heap = "glibc defaults" if args.default_heap or not keep_freed_memory() else "keep_freed_memory"
    with threadpool_limits(max(1, int(args.threads))):
        return _run(args, heap)


def _run(args: argparse.Namespace, heap: str) -> int:
    from .data import COLOUR_NAMES, FACTORS, ColorfulDigits, load_gray_digits, random_nuisance, render
    from .experts import (TEST_TEMPLATES, TRAIN_TEMPLATES, TextExpert, caption, text_available, train_autoencoder,
                          train_classifier)
    from .interpret import FactorTransformer, InvarianceExplainer, estimate_factor_sizes, fit_iin, sketch_pairs
    from .interpret.iin import pair_correlation_scores
    from .translate import Net2Net
    from .viz import save_grid

    cfg = QUICK if args.quick else DemoConfig()
    out = Path(args.out)
    (out / "experts").mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, int(args.threads)))
    torch.manual_seed(args.seed)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    m: dict = {"config": {**asdict(cfg), "quick": bool(args.quick), "seed": args.seed, "heap": heap}}
    g = torch.Generator().manual_seed(args.seed)
    kw = dict(n_blocks=cfg.n_blocks, hidden=cfg.hidden)

    with Stage(timings, "data"):
        tr = ColorfulDigits("train", copies=cfg.train_copies, seed=args.seed, deform=cfg.deform)
        te = ColorfulDigits("test", copies=2, seed=args.seed)
        m["data"] = {"train": len(tr), "test": len(te), "colours": list(COLOUR_NAMES),
                     "split": "writer-block proxy: last 3 of 13 contiguous index blocks held out",
                     "train_augmentation": f"{cfg.train_copies} renders per train digit, all but the first with a "
                                           f"random affine warp (strength {cfg.deform:g}); test images unwarped"}

    with Stage(timings, "experts"):
        tag = f"s{tr.size}_c{cfg.train_copies}_def{cfg.deform:g}_seed{args.seed}"
        ae = train_autoencoder(tr.images, latent_dim=cfg.latent_dim, width=cfg.ae_width, epochs=cfg.ae_epochs,
                               seed=args.seed,
                               cache=out / "experts" / f"ae_{tag}_d{cfg.latent_dim}_w{cfg.ae_width}_e{cfg.ae_epochs}.pt",
                               progress=True)
        clf = train_classifier(tr.images, tr.digits, epochs=cfg.clf_epochs, seed=args.seed,
                               cache=out / "experts" / f"clf_{tag}_e{cfg.clf_epochs}.pt", progress=True)
        colour_judge = ColourJudge(tr.images, tr.colours)
        with torch.no_grad():
            z_tr, z_te = ae.encode(tr.images), ae.encode(te.images)
            mu, sd = z_tr.mean(0), z_tr.std(0)
            n_tr, n_te = (z_tr - mu) / sd, (z_te - mu) / sd
            rec_te = ae.decode(z_te)
            f_tr, f_te = clf.features(tr.images), clf.features(te.images)
            logit_tr, logit_te = clf.head(f_tr), clf.head(f_te)

        def encode_img(img: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return (ae.encode(img) - mu) / sd

        def decode(n: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return ae.decode(n * sd + mu)

        m["experts"] = {
            "ae_test_mse": _r(F.mse_loss(rec_te, te.images)),
            "classifier_test_acc": _r((clf.predict(te.images) == te.digits).float().mean()),
            "classifier_on_ae_reconstructions_acc": _r((clf.predict(rec_te) == te.digits).float().mean()),
            "colour_judge_test_acc": _r((colour_judge.predict(te.images) == te.colours).float().mean()),
            "colour_judge_on_ae_reconstructions_acc": _r((colour_judge.predict(rec_te) == te.colours).float().mean()),
            "digit_probe_on_ae_latent": _r(_probe_acc(z_tr, tr.digits, z_te, te.digits)),
            "digit_knn_probe_on_ae_latent": _r(_probe_acc(z_tr, tr.digits, z_te, te.digits, "knn")),
            "digit_mlp_probe_on_ae_latent": _r(_probe_acc(z_tr, tr.digits, z_te, te.digits, "mlp")),
            "colour_probe_on_ae_latent": _r(_probe_acc(z_tr, tr.colours, z_te, te.colours)),
        }

    # The experts consume the global RNG only when trained, not when loaded from the cache:
    # reseed so that every later stage (flow initialisations) is the same in a first and a
    # second run.
    torch.manual_seed(args.seed)

    # ---- IIN on the autoencoder latent ----
    with Stage(timings, "iin"):
        pairs = {}
        for f in FACTORS:
            a, b = tr.pair_indices(4000, f, g)
            pairs[f] = (n_tr[a], n_tr[b])
        m["factor_size_estimate_ae"] = {"scores": {k: _r(v) for k, v in pair_correlation_scores(pairs).items()},
                                        "sizes": estimate_factor_sizes(pairs, cfg.latent_dim)}
        iin = FactorTransformer(cfg.latent_dim, {"digit": cfg.digit_size, "colour": cfg.colour_size},
                                n_blocks=cfg.iin_blocks, hidden=cfg.hidden)

        def iin_pairs(gen: torch.Generator):
            # every pair is rendered afresh (new warp, brightness, background, shift; labels kept) and
            # encoded by the frozen AE: the IIN sees new latents at every step instead of fitting the
            # fixed training latents
            a, b, f = tr.factor_pairs(cfg.batch, gen, (cfg.digit_pair_weight, 1.0))
            return encode_img(tr.rerender(a, gen, cfg.deform)), encode_img(tr.rerender(b, gen, cfg.deform)), f

        losses = fit_iin(iin, iin_pairs, cfg.iin_steps, lr=cfg.iin_lr, noise=cfg.iin_noise, seed=args.seed,
                         progress=True, desc="IIN")
        with torch.no_grad():
            fac_tr, fac_te = iin.encode(n_tr), iin.encode(n_te)
        m["iin"] = {"sizes_used": iin.sizes, "final_loss": _r(np.mean(losses[-50:]))}
        for key, kind in (("probes", "linear"), ("probes_knn", "knn"), ("probes_mlp", "mlp")):
            m["iin"][key] = {fac: {a: _r(_probe_acc(fac_tr[fac], tr.labels(a), fac_te[fac], te.labels(a), kind))
                                   for a in FACTORS} for fac in iin.names}
        # swap success on random test pairs, judged on decoded images
        ga = torch.Generator().manual_seed(args.seed + 1)
        ia, ib = torch.randint(len(te), (2, 600), generator=ga)
        swap = {}
        with torch.no_grad():
            for fac in FACTORS:
                img = decode(iin.swap(n_te[ia], n_te[ib], fac))
                d_hat, c_hat = clf.predict(img), colour_judge.predict(img)
                if fac == "digit":
                    target_ok, keep_ok = d_hat == te.digits[ib], c_hat == te.colours[ia]
                else:
                    target_ok, keep_ok = c_hat == te.colours[ib], d_hat == te.digits[ia]
                changes = te.labels(fac)[ia] != te.labels(fac)[ib]
                swap[fac] = {"success": _r((target_ok & keep_ok).float().mean()),
                             "target_attribute_taken": _r(target_ok.float().mean()),
                             "other_attribute_kept": _r(keep_ok.float().mean()),
                             "success_when_attribute_differs": _r((target_ok & keep_ok)[changes].float().mean())}
            roundtrip = (iin.decode(iin.encode(n_te)) - n_te).abs().max()
        m["iin"]["swap"] = swap
        m["iin"]["roundtrip_max_abs_err"] = float(roundtrip)
        # pictures: swap grids (row = image a, column = factor source b) and interpolations
        rows, cols = torch.arange(8) * 7, torch.arange(8) * 11 + 3
        with torch.no_grad():
            for fac in FACTORS:
                grid = torch.ones(9, 9, 3, tr.size, tr.size)
                grid[0, 1:] = te.images[cols]
                grid[1:, 0] = te.images[rows]
                for i, r in enumerate(rows.tolist()):
                    grid[i + 1, 1:] = decode(iin.swap(n_te[[r] * 8], n_te[cols], fac))
                save_grid(grid, out / f"iin_swap_{fac}.png", scale=4)
                path = iin.interpolate(n_te[rows], n_te[cols], fac, steps=9)  # (9, 8, D)
                inter = decode(path.flatten(0, 1)).view(9, 8, 3, tr.size, tr.size).transpose(0, 1)
                save_grid(torch.cat([te.images[rows, None], inter, te.images[cols, None]], 1),
                          out / f"iin_interp_{fac}.png", scale=4)

    # ---- sketch-defined concept: stroke thickness ----
    with Stage(timings, "sketch"):
        gray, _ = load_gray_digits(tr.size)
        thin = gray[te.source[0]:te.source[0] + 1]
        thick = F.max_pool2d(thin, 3, 1, 1)
        examples = torch.cat([thin, thick])

        def nuisance(gr: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
            return render(gr, random_nuisance(len(gr), gen))

        concept = FactorTransformer(cfg.latent_dim, {"thickness": 2}, **kw)

        def concept_pairs(gen: torch.Generator):
            half = cfg.batch // 2
            xa, xb, _ = sketch_pairs(examples, half, nuisance, gen)
            a, b = torch.randint(len(tr), (2, cfg.batch - half), generator=gen)
            shared = torch.cat([torch.zeros(half, dtype=torch.long), torch.full((cfg.batch - half,), -1)])
            return (torch.cat([encode_img(xa), n_tr[a]]), torch.cat([encode_img(xb), n_tr[b]]), shared)

        fit_iin(concept, concept_pairs, cfg.sketch_steps, seed=args.seed, progress=True, desc="sketch IIN")
        gs = torch.Generator().manual_seed(args.seed + 2)
        xa, xb, k = sketch_pairs(examples, 400, nuisance, gs)
        with torch.no_grad():
            ca, cb = concept.encode(encode_img(xa)), concept.encode(encode_img(xb))
        m["sketch"] = {"concept": "stroke thickness (thin example vs 3x3-dilated example of one test digit)",
                       "thickness_probe_from_concept_factor": _r(_probe_acc(ca["thickness"][:200], k[:200],
                                                                            cb["thickness"][200:], k[200:])),
                       "thickness_probe_from_residual": _r(_probe_acc(ca["residual"][:200], k[:200],
                                                                      cb["residual"][200:], k[200:]))}
        with torch.no_grad():
            src = encode_img(nuisance(thick.expand(8, -1, -1, -1), gs))
            new = decode(concept.swap(n_te[cols], src, "thickness"))
        save_grid(torch.stack([te.images[cols], new]), out / "sketch_thickness_swap.png", scale=4)
        save_grid(nuisance(examples.repeat(4, 1, 1, 1), gs).view(4, 2, 3, tr.size, tr.size).transpose(0, 1),
                  out / "sketch_examples.png", scale=4)

    # ---- invariances of the classifier ----
    with Stage(timings, "invariances"):
        inv = InvarianceExplainer(cfg.latent_dim, f_tr.shape[1], **kw)

        def inv_batch(gen: torch.Generator):
            idx = torch.randint(len(tr), (cfg.batch,), generator=gen)
            return n_tr[idx], f_tr[idx]

        inv.fit(inv_batch, cfg.inv_steps, seed=args.seed, progress=True, desc="invariance cINN")
        n_s = 8
        sel = torch.randperm(len(te), generator=torch.Generator().manual_seed(args.seed + 3))[:300]
        with torch.no_grad():
            samples = inv.invariances(f_te[sel], n_s, cfg.temperature)
            img = decode(samples.flatten(0, 1))
        pred = clf.predict(img).view(-1, n_s)
        orig = clf.predict(te.images[sel])
        colours = colour_judge.predict(img).view(-1, n_s)
        m["invariances"] = {
            "class_retention": _r((pred == orig[:, None]).float().mean()),
            "mean_distinct_colours_per_8_samples": _r(np.mean([len(set(r.tolist())) for r in colours])),
        }
        show = torch.cat([te.images[sel[:8], None], img.view(-1, n_s, 3, tr.size, tr.size)[:8]], 1)
        save_grid(show, out / "invariance_samples.png", scale=4)
        # IIN on the classifier's own representation: how much colour does it still carry?
        fmu, fsd = f_tr.mean(0), f_tr.std(0) + 1e-3
        nf_tr, nf_te = (f_tr - fmu) / fsd, (f_te - fmu) / fsd
        rep_pairs = {}
        for f in FACTORS:
            a, b = tr.pair_indices(4000, f, g)
            rep_pairs[f] = (nf_tr[a], nf_tr[b])
        m["factor_size_estimate_classifier"] = {
            "scores": {k: _r(v) for k, v in pair_correlation_scores(rep_pairs).items()},
            "sizes": estimate_factor_sizes(rep_pairs, nf_tr.shape[1])}
        rep_iin = FactorTransformer(nf_tr.shape[1], {"digit": cfg.digit_size, "colour": cfg.colour_size}, **kw)

        def rep_pair_fn(gen: torch.Generator):
            a, b, f = tr.factor_pairs(cfg.batch, gen, (cfg.digit_pair_weight, 1.0))
            return nf_tr[a], nf_tr[b], f

        # the noise dequantises the post-ReLU features (dead units are constant, ~40% of values are 0):
        # without it the NLL is unbounded and ended near 5e4 with the digit information in the residual
        fit_iin(rep_iin, rep_pair_fn, cfg.rep_iin_steps, noise=cfg.iin_noise, seed=args.seed, progress=True,
                desc="IIN on classifier")
        with torch.no_grad():
            rtr, rte = rep_iin.encode(nf_tr), rep_iin.encode(nf_te)
        m["invariances"]["classifier_iin_probes"] = {
            fac: {attr: _r(_probe_acc(rtr[fac], tr.labels(attr), rte[fac], te.labels(attr))) for attr in FACTORS}
            for fac in rep_iin.names}
        m["invariances"]["colour_probe_on_classifier_features"] = _r(
            _probe_acc(f_tr, tr.colours, f_te, te.colours))

    # ---- Net2Net: classifier logits -> AE latent ----
    with Stage(timings, "net2net_logits"):
        n2n = Net2Net(cfg.latent_dim, 10, **kw)

        def n2n_batch(gen: torch.Generator):
            idx = torch.randint(len(tr), (cfg.batch,), generator=gen)
            return n_tr[idx], logit_tr[idx]

        n2n.fit(n2n_batch, cfg.n2n_steps, seed=args.seed, progress=True, desc="net2net logits->AE")
        with torch.no_grad():
            img = decode(n2n.translate(logit_te, cfg.temperature))
        m["net2net_logits"] = {"class_conditional_acc": _r((clf.predict(img) == logit_te.argmax(1)).float().mean())}
        per_class = torch.stack([torch.nonzero(te.digits == d).flatten()[0] for d in range(10)])
        with torch.no_grad():
            samples = n2n.translate(logit_te[per_class].repeat_interleave(8, 0), cfg.temperature)
        save_grid(decode(samples).view(10, 8, 3, tr.size, tr.size), out / "net2net_class_samples.png", scale=4)

    # ---- Net2Net: MiniLM sentence embedding -> AE latent ----
    ok, why = text_available()
    if args.no_text or not ok:
        m["text"] = {"skipped": "--no-text" if args.no_text else why}
        print(f"[demo] {m['text']['skipped']}", flush=True)
    else:
        with Stage(timings, "text"):
            text = TextExpert()

            def table(templates: tuple[str, ...]) -> torch.Tensor:
                caps = [caption(t, d, c) for t in templates for d in range(10) for c in range(len(COLOUR_NAMES))]
                return text.encode(caps).view(len(templates), 10, len(COLOUR_NAMES), -1)

            emb_train, emb_test = table(TRAIN_TEMPLATES), table(TEST_TEMPLATES)
            # standardise with train-caption statistics: the digit is a small direction in MiniLM space
            e_mu, e_sd = emb_train.flatten(0, 2).mean(0), emb_train.flatten(0, 2).std(0) + 1e-6
            emb_train, emb_test = (emb_train - e_mu) / e_sd, (emb_test - e_mu) / e_sd
            t2i = Net2Net(cfg.latent_dim, text.dim, **kw)

            def text_batch(gen: torch.Generator):
                idx = torch.randint(len(tr), (cfg.batch,), generator=gen)
                tpl = torch.randint(len(TRAIN_TEMPLATES), (cfg.batch,), generator=gen)
                return n_tr[idx], emb_train[tpl, tr.digits[idx], tr.colours[idx]]

            t2i.fit(text_batch, cfg.text_steps, seed=args.seed, progress=True, desc="net2net text->AE")
            k_s = 4
            d_grid, c_grid = torch.meshgrid(torch.arange(10), torch.arange(len(COLOUR_NAMES)), indexing="ij")
            d_all = d_grid.flatten().repeat(len(TEST_TEMPLATES))
            c_all = c_grid.flatten().repeat(len(TEST_TEMPLATES))
            cond = emb_test.flatten(0, 2).repeat_interleave(k_s, 0)
            with torch.no_grad():
                img = decode(t2i.translate(cond, cfg.temperature))
            d_ok = clf.predict(img) == d_all.repeat_interleave(k_s)
            c_ok = colour_judge.predict(img) == c_all.repeat_interleave(k_s)
            m["text"] = {"held_out_templates": list(TEST_TEMPLATES), "samples": len(img),
                         "prompted_digit_acc": _r(d_ok.float().mean()),
                         "prompted_colour_acc": _r(c_ok.float().mean()),
                         "both_acc": _r((d_ok & c_ok).float().mean())}
            prompts = [("a picture of a red 7", 7, 0), ("the blue handwritten digit three", 3, 2),
                       ("an image showing the number 0 written in yellow", 0, 3),
                       ("a picture of a green 4", 4, 1), ("the magenta handwritten digit nine", 9, 4),
                       ("a picture of a cyan 2", 2, 5)]
            pe = ((text.encode([p for p, _, _ in prompts]) - e_mu) / e_sd).repeat_interleave(8, 0)
            with torch.no_grad():
                img = decode(t2i.translate(pe, cfg.temperature)).view(len(prompts), 8, 3, tr.size, tr.size)
            save_grid(img, out / "text_to_image.png", scale=4)
            m["text"]["picture_prompts"] = [p for p, _, _ in prompts]

    timings["total"] = round(time.perf_counter() - t_start, 2)
    m["timings_s"] = timings
    (out / "metrics.json").write_text(json.dumps(m, indent=2))
    (out / "report.md").write_text(_report(m))
    print(f"[demo] wrote {out / 'metrics.json'} and {out / 'report.md'} in {timings['total']:.0f} s", flush=True)
    return 0


# ---- report ----------------------------------------------------------------------------
def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _check(value: float, target: float, above: bool = True) -> str:
    ok = value >= target if above else value <= target
    return "met" if ok else "NOT met"


def _report(m: dict) -> str:
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
        f"| digit probe on digit factor >= 95% | {_pct(pm['digit']['digit'])} | {_check(pm['digit']['digit'], .95)} "
        f"| {_pct(p['digit']['digit'])} | {_pct(pk['digit']['digit'])} |",
        f"| colour probe on colour factor >= 99% | {_pct(pm['colour']['colour'])} | "
        f"{_check(pm['colour']['colour'], .99)} | {_pct(p['colour']['colour'])} | {_pct(pk['colour']['colour'])} |",
        f"| colour from digit factor near chance ({_pct(chance_colour)}; met if <= chance + 10 points) "
        f"| {_pct(pm['digit']['colour'])} | {_check(pm['digit']['colour'], chance_colour + 0.1, above=False)} "
        f"| {_pct(p['digit']['colour'])} | {_pct(pk['digit']['colour'])} |",
        "", "| target (judged on decoded images) | value | status |", "|---|---|---|",
        *[f"| swap success ({f}) >= 90% | {_pct(v['success'])} | {_check(v['success'], .9)} |"
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
            f"({_check(t['prompted_digit_acc'], .9)} the 90% target), prompted colour "
            f"{_pct(t['prompted_colour_acc'])}, both {_pct(t['both_acc'])}.", "",
            "Rows: " + "; ".join(f"'{p}'" for p in t["picture_prompts"]) + ".", "",
            "![text to image](text_to_image.png)", ""]
    return "\n".join(lines)
